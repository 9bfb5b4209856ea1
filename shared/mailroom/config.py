"""One typed settings object, read from the environment once per cold start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mailroom import secret_references
from mailroom.domain.return_path import SigningKeyring
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.domain.throttling import ThrottlePolicy, parse_ceilings

# The email providers Mailroom has an adapter for (adapters/providers/).
PROVIDER_NAMES = ("smtp", "ses", "sendgrid", "mailgun")
_PROVIDER = "(?:" + "|".join(PROVIDER_NAMES) + ")"
PROVIDER_ORDER_PATTERN = rf"^\s*{_PROVIDER}(?:\s*,\s*{_PROVIDER})*\s*$"
# Settings that may be given as a Secrets Manager or Parameter Store reference
# (mailroom/secret_references.py) rather than as the value itself.
SECRET_SETTINGS = frozenset(
    {
        "database_url",
        "redis_url",
        "smtp_password",
        "sendgrid_api_key",
        "mailgun_api_key",
        "sendgrid_webhook_public_key",
        "mailgun_webhook_signing_key",
        "admin_token_sha256",
        "template_code_signing_key",
        "secrets_encryption_keys",
        "bounce_signing_keys",
    }
)


class _ResolvedSecretReferences(PydanticBaseSettingsSource):
    """The environment, with ``secretsmanager:``/``ssm:`` references in SECRET_SETTINGS read."""

    def __init__(self, settings_cls: type[BaseSettings], environment: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._environment = environment

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ is overridden and reads the whole environment at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = self._environment()
        return {
            name: secret_references.resolve(value)
            if name in SECRET_SETTINGS and isinstance(value, str)
            else value
            for name, value in values.items()
        }


class Settings(BaseSettings):
    """Everything Mailroom reads from its environment.

    boto3 is deliberately not configured here: every client honours
    ``AWS_ENDPOINT_URL`` by itself, so that one variable decides whether we talk
    to AWS, LocalStack or moto.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _ResolvedSecretReferences(settings_cls, env_settings),
            dotenv_settings,
            file_secret_settings,
        )

    database_url: str = "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom"
    # A Lambda container serves one request at a time, so one pooled connection
    # is enough there; the threaded local runner raises it.
    db_pool_size: int = Field(default=1, ge=1)
    db_max_overflow: int = Field(default=2, ge=0)
    redis_url: str = "redis://127.0.0.1:6379/0"

    aws_region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    queue_url: str = ""
    # Bulk batches (issue 17): the planner's queue, the bucket recipient files
    # are uploaded to, how long an upload URL lives, the request size the
    # batches function takes (10,000 recipients with their props; Lambda's
    # own limit is 6 MB), and how many recipients one planner transaction writes.
    planner_queue_url: str = ""
    batch_uploads_bucket: str = ""
    batch_upload_url_seconds: int = Field(default=3600, ge=60, le=7 * 86_400)
    batch_max_request_bytes: int = Field(default=5_500_000, ge=1024, le=6_000_000)
    # 10,000: against 2,000, about 30 % more recipients a second (fewer
    # round trips and commits per recipient; bench/batches.py, issue 17),
    # and at most three chunks (a few MB) are held at once.
    planner_chunk_size: int = Field(default=10_000, ge=1, le=20_000)
    # One planner run stops after this long and hands on to the next run
    # through its queue (the function's 900 s timeout bounds it too). The
    # local runner, whose functions take turns, sets a few seconds.
    planner_run_seconds: int = Field(default=840, ge=0, le=900)
    # Issue 20: the high (priority 8-10) and low (1-3) bands' send queues;
    # QUEUE_URL is the normal band's (4-7) and takes a band left unset.
    high_priority_queue_url: str = ""
    low_priority_queue_url: str = ""
    # SQS fair queues (2025): every send record carries MessageGroupId = the
    # client's id, so one client's backlog does not delay another's mail on
    # the same band. On AWS standard queues accept it; turn it off for an
    # emulator that refuses MessageGroupId on a standard queue.
    sqs_fair_queues: bool = True
    # Sends per minute the worker claims for any one client, over all its
    # queues (a queue's own limit is set through /v1/queues); unset: none.
    client_sends_per_minute: int | None = Field(default=None, ge=1)
    # At most this many of one client's messages claimed by workers at once,
    # so one client's backlog cannot take every worker of a band; unset: none.
    client_max_in_flight: int | None = Field(default=None, ge=1)

    templates_dir: Path = Path("templates")
    # The template engine (docs/architecture.md, "Template engine").
    # A render (subject, HTML, text and CSS inlining) is stopped after this.
    template_render_timeout_ms: int = Field(default=200, ge=10, le=10_000)
    # Compiling is bounded too; the single-flight lock expires 1 s after it.
    template_compile_timeout_ms: int = Field(default=2000, ge=100, le=30_000)
    # Bytes one render may produce, counting intermediate strings: stops
    # templates that build huge strings before they exhaust memory.
    template_render_budget_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)
    # Compiled templates kept per process, and how long Redis keeps them.
    template_cache_size: int = Field(default=256, ge=1)
    template_cache_ttl_seconds: int = Field(default=7 * 86_400, ge=60)
    # HMAC-SHA256 key sealing the compiled code shared through Redis (32+
    # characters, the same for every function). Unset: nothing is shared,
    # each process compiles for itself; the SAM template requires it.
    template_code_signing_key: SecretStr | None = Field(default=None, min_length=32)

    # AES-256-GCM keys sealing the secrets Mailroom must read back (DKIM
    # private keys, webhook signing secrets, client SMTP passwords):
    # "<key id>:<base64 of 32 bytes>", comma-separated; the first seals, all
    # open, so a key is rotated by listing a new one first
    # (domain/sealed_secrets.py). Unset: features that store such secrets
    # answer 503 until it is configured.
    secrets_encryption_keys: SecretStr | None = None

    @property
    def secret_keyring(self) -> SecretKeyring | None:
        if self.secrets_encryption_keys is None:
            return None
        value = self.secrets_encryption_keys.get_secret_value()
        return SecretKeyring.from_setting(value) if value.strip() else None

    # Bounces and unsubscribes (issue 16, docs/architecture.md "Bounces and
    # unsubscribe"). HMAC keys signing the VERP return path and the one-click
    # unsubscribe token: "<key id>:<base64 of 16+ bytes>", comma-separated,
    # key ids of 1-8 a-z0-9; the first signs, all verify, so a key rotates by
    # listing a new one first and keeping the old one while its mail may
    # still bounce (and its unsubscribe links be clicked: keep it for good).
    # Unset: SMTP mail goes out with the From address as envelope sender and
    # bulk mail without List-Unsubscribe.
    bounce_signing_keys: SecretStr | None = None
    # The platform's bounce domain (its MX points at SES inbound, or the local
    # runner's listener): the VERP return path of mail whose From domain is not
    # one of the sending client's verified domains with its bounces.<domain>
    # MX found. Unset: such mail keeps its From address as envelope sender.
    bounce_domain: str | None = Field(default=None, pattern=r"^$|^[A-Za-z0-9.-]{1,253}$")
    # Where the one-click unsubscribe URL points: the API's public base URL
    # (https://mail.example.com, or the API Gateway stage URL).
    # Empty: bulk mail carries only the mailto: unsubscribe address.
    public_base_url: str = Field(default="", pattern=r"^$|^https?://\S+$")
    # Soft bounces (a full mailbox, 4.4.7) in a row before the address is
    # suppressed, and for how long; a delivery resets the count.
    soft_bounce_limit: int = Field(default=3, ge=1)
    soft_bounce_suppression_days: int = Field(default=7, ge=1, le=365)
    # Where the SES receipt rule's S3 action stores inbound mail (the inbound
    # function reads it back): bucket, and the key prefix before SES's id.
    inbound_bucket: str = ""
    inbound_prefix: str = "inbound/"
    # Raw inbound mail beyond this is cut before it is stored for review.
    inbound_max_stored_bytes: int = Field(default=256 * 1024, ge=1024)

    # Open and click tracking (issue 21, docs/architecture.md "Tracking").
    # Where /c/{token} and /t/{token}.gif point: a client's own tracking host
    # is a CNAME to the API's custom domain, given here; empty: PUBLIC_BASE_URL.
    # Neither set: nothing is tracked, whatever a message asks.
    tracking_base_url: str = Field(default="", pattern=r"^$|^https?://\S+$")
    # Tracked when a message does not say (transactional mail: off).
    tracking_default_opens: bool = False
    tracking_default_clicks: bool = False
    # Comma-separated domains (and their subdomains) whose links are never rewritten.
    tracking_excluded_domains: str = ""
    # Machine-hit signals (domain/tracking_signals.py): a hit this soon after
    # the send; these CIDR ranges (Apple's 17.0.0.0/8, where Mail Privacy
    # Protection's proxy fetches from); clicks from a user agent and address
    # that hit the hidden honeypot link within this window.
    tracking_machine_seconds: int = Field(default=10, ge=0, le=3600)
    tracking_machine_ip_ranges: str = "17.0.0.0/8"
    tracking_honeypot_window_seconds: int = Field(default=300, ge=0, le=86_400)
    # Hits per token per minute recorded one by one; beyond, only counted (Redis).
    tracking_hits_per_token_minute: int = Field(default=30, ge=1)
    # Issue 21 item 3: hits reach PostgreSQL through a Redis stream drained in
    # batches by the tracking consumer (TrackingIngestFunction), which the
    # first hit after a quiet spell wakes through this queue (the doorbell).
    tracking_ingest_queue_url: str = ""
    # Stream entries the consumer failed on too often end up here.
    tracking_ingest_dead_letter_queue_url: str = ""
    # Hits per transaction, and how long one drain starts batches.
    tracking_ingest_batch_size: int = Field(default=500, ge=1, le=5000)
    tracking_ingest_run_seconds: float = Field(default=50.0, ge=0, le=840)
    # The stream's cap (approximate): beyond it the oldest entries are cut.
    tracking_stream_max_length: int = Field(default=1_000_000, ge=1000)

    @property
    def tracking_base(self) -> str:
        return (self.tracking_base_url or self.public_base_url).rstrip("/")

    @property
    def tracking_cname_target(self) -> str:
        """The host clients' tracking hosts are CNAMEs of: the tracking base URL's."""
        from urllib.parse import urlsplit

        return urlsplit(self.tracking_base).hostname or ""

    @property
    def tracking_excluded(self) -> frozenset[str]:
        names = (
            name.strip().rstrip(".").lower() for name in self.tracking_excluded_domains.split(",")
        )
        return frozenset(name for name in names if name)

    @property
    def bounce_keyring(self) -> SigningKeyring | None:
        if self.bounce_signing_keys is None:
            return None
        value = self.bounce_signing_keys.get_secret_value()
        return SigningKeyring.from_setting(value) if value.strip() else None

    # Sending domains and DKIM (issue 16, docs/architecture.md "Sending
    # domains"). Which sends must come from a verified domain of their
    # client: "all" keys, "live" keys only (test keys' mail never leaves the
    # sandbox), or "off" (the local runner's tests; never in production).
    # A send without "from" uses DEFAULT_FROM, the operator's own address,
    # which is not checked.
    sender_verification: Literal["all", "live", "off"] = "live"
    # The DNS server(s) verification asks, "host[:port]" comma-separated;
    # empty: the system's resolver. Tests point it at their own server.
    dns_resolver: str = ""
    dns_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    # The host bounces.<domain> should point at (MX), where inbound mail lands.
    bounce_mx_host: str = "inbound.mailroom.invalid"
    # The SPF include the client publishes; empty: amazonses.com when SES
    # is first in PROVIDER_ORDER, else "v=spf1 mx ~all".
    spf_include: str = ""
    dmarc_report_address: str = ""
    # A second DKIM signature with Ed25519 (RFC 8463) beside RSA-2048.
    dkim_ed25519: bool = False
    # Signing keys are read from PostgreSQL once per domain and process for this long.
    dkim_key_cache_seconds: float = Field(default=300.0, ge=0, le=86_400)
    # Create an SES domain identity (Easy DKIM) instead of our own key; also
    # on whenever SES is in PROVIDER_ORDER.
    ses_domain_identities: bool = False
    # The scheduled re-check: domains not checked for this long, this many per tick.
    domain_recheck_seconds: int = Field(default=86_400, ge=60)
    domain_recheck_batch_size: int = Field(default=50, ge=1, le=1000)

    @property
    def uses_ses_identities(self) -> bool:
        return self.ses_domain_identities or "ses" in self.provider_names

    @property
    def dns_nameservers(self) -> list[tuple[str, int]]:
        from mailroom.adapters.dns_records import parse_nameservers

        return parse_nameservers(self.dns_resolver)

    # Outbound webhooks (issue 19; docs/architecture.md, "Outbound webhooks").
    # The dispatcher's queue (WebhookQueue in template.yaml).
    webhook_queue_url: str = ""
    # Allow http:// and private, loopback and link-local receivers: for a
    # developer's local receiver (`make dev` turns it on), never in production.
    webhook_allow_private_urls: bool = False
    # One attempt's limit; slower is a failed attempt.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    # Deliveries sent at once by one dispatcher invocation.
    webhook_dispatch_concurrency: int = Field(default=32, ge=1, le=256)
    # How long one dispatcher invocation waits for its deliveries; slower
    # ones (a slow endpoint) finish on their own and record themselves.
    webhook_batch_wait_seconds: float = Field(default=2.0, gt=0, le=120)
    # Outbox rows a relay pass numbers and fans out, and due deliveries it queues.
    webhook_relay_batch_size: int = Field(default=1000, ge=1, le=20_000)
    # How long webhook events (the /v1/events feed, replays) and their
    # deliveries and attempts are kept. At least a week: the retry schedule
    # runs about 28 hours and a failing endpoint is disabled after 5 days.
    webhook_retention_days: int = Field(default=30, ge=7, le=3650)
    # Events one tick deletes at most (their deliveries and attempts go with them).
    webhook_purge_batch_size: int = Field(default=5000, ge=1, le=100_000)

    default_from: str = "Mailroom <noreply@example.com>"
    # Bodies beyond this are refused with 413 before they are parsed.
    max_request_bytes: int = Field(default=256 * 1024, ge=1024)
    max_recipients: int = Field(default=50, ge=1)
    # Total sends tried for one message before it ends `failed`; the queue's
    # maxReceiveCount in template.yaml is set above it.
    max_send_attempts: int = Field(default=5, ge=1)
    # Reliability (issue 7). A worker's claim on a message lasts this long; it
    # must exceed the worker's Lambda timeout (120 s) so only a dead worker's
    # claim is ever taken over.
    claim_lease_seconds: int = Field(default=150, ge=1)
    # The reconciler re-enqueues a queued/sending message unchanged for this
    # long (past its retry's due time), and ends it `failed` once workers
    # claimed it this many times without an outcome (a crash loop).
    reconcile_stale_seconds: int = Field(default=900, ge=1)
    reconcile_max_claims: int = Field(default=10, ge=1)
    reconcile_batch_size: int = Field(default=500, ge=1)
    # Scheduling (issue 18). The scheduler runs every minute; it enqueues
    # scheduled messages due within the look-ahead, held back by SQS until
    # their time (more than the period, so a late tick costs no lateness).
    # It claims rows in chunks, and starts no chunk once the budget is spent
    # (below the scheduler's 60 s Lambda timeout). A message enqueued this
    # long ago and still scheduled lost its queue record: it is enqueued again.
    scheduler_lookahead_seconds: int = Field(default=90, ge=0, le=900)
    scheduler_chunk_size: int = Field(default=1000, ge=1, le=10_000)
    scheduler_time_budget_seconds: float = Field(default=45.0, gt=0, le=840)
    scheduler_stale_seconds: int = Field(default=600, ge=60)
    scheduler_schedules_per_pass: int = Field(default=200, ge=1)
    # Issue 20: resume and drain release a paused queue's held mail a page
    # at a time (one transaction and 1/10 as many SendMessageBatch calls
    # each); the request releases the first page, the scheduler's pass the
    # rest, within its own budget after the scheduled messages'.
    queue_release_page_size: int = Field(default=1000, ge=10, le=10_000)
    queue_release_budget_seconds: float = Field(default=20.0, gt=0, le=840)

    # Delivery feedback (docs/architecture.md, "Delivery feedback"). SNS
    # topics whose messages are accepted, comma-separated ARNs: anything else
    # is refused, subscription confirmations included.
    sns_topic_arns: str = ""
    # SendGrid's "Signed Event Webhook" verification key (base64 DER or PEM).
    sendgrid_webhook_public_key: str | None = None
    # Mailgun's HTTP webhook signing key.
    mailgun_webhook_signing_key: SecretStr | None = None
    # Signed timestamps older (or further ahead) than this are refused; a
    # Mailgun token is remembered in Redis for twice this long.
    webhook_max_age_seconds: int = Field(default=300, ge=30, le=86_400)
    # Providers batch events (SendGrid up to ~768 KB), so webhook bodies may be
    # larger than API requests; Lambda's synchronous payload limit is 6 MB.
    webhook_max_request_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=6_000_000)

    # The local runner's SNS signing certificate (PEM): messages whose
    # SigningCertURL is https://sns.localhost/... verify against it. Honoured
    # only when AWS_ENDPOINT_URL is set (LocalStack, moto), never on real AWS.
    local_sns_signing_certificate: str | None = None
    # Read only to tell a local stack from real AWS (and where /health/detailed
    # asks SES); boto3 reads it itself.
    aws_endpoint_url: str = Field(default="", validation_alias="AWS_ENDPOINT_URL")

    @property
    def sns_topic_allowlist(self) -> frozenset[str]:
        return frozenset(arn.strip() for arn in self.sns_topic_arns.split(",") if arn.strip())

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    # Issue 20: how long a worker trusts its copy of a client's SMTP
    # configurations (an edit or a new default takes effect this much later).
    smtp_config_cache_seconds: float = Field(default=30.0, ge=0)
    # Clients' relays on loopback, private, link-local (metadata) or other
    # non-global addresses: refused unless this is set (tests, a private
    # deployment whose relays are on its own network).
    smtp_relay_allow_internal_hosts: bool = False

    # Per-recipient-domain throttling (issue 20, docs/architecture.md
    # "Relays and domain throttling"). Ceilings per minute per recipient
    # domain group, per sender (a client's relay, else the From domain):
    # "gmail=600,outlook=300,yahoo=300,other=1200"; a group not named is not
    # limited; empty: off (a relay's own ceilings still apply).
    throttle_per_minute: str = ""
    # AIMD: a 421 / 4.7.x deferral multiplies the rate by this (at most once
    # per THROTTLE_CUT_HOLD_SECONDS), each minute without one adds the step.
    throttle_decrease_factor: float = Field(default=0.5, gt=0, lt=1)
    throttle_increase_per_minute: float = Field(default=10.0, gt=0)
    throttle_floor_per_minute: float = Field(default=1.0, gt=0)
    throttle_cut_hold_seconds: float = Field(default=60.0, ge=0)
    # Warm-up: a sending domain's first day may send this many per group,
    # doubled each day until WARMUP_TARGET_PER_DAY; unset: no warm-up.
    warmup_start_per_day: int | None = Field(default=None, ge=1)
    warmup_target_per_day: int = Field(default=100_000, ge=1)

    @field_validator("throttle_per_minute")
    @classmethod
    def _valid_ceilings(cls, value: str) -> str:
        parse_ceilings(value)  # ValueError: the setting is refused at start
        return value

    @property
    def throttle_policy(self) -> ThrottlePolicy:
        return ThrottlePolicy(
            per_minute=parse_ceilings(self.throttle_per_minute),
            decrease_factor=self.throttle_decrease_factor,
            increase_step=self.throttle_increase_per_minute,
            floor_per_minute=self.throttle_floor_per_minute,
            warmup_start_per_day=self.warmup_start_per_day,
            warmup_target_per_day=self.warmup_target_per_day,
        )

    # The provider chain (docs/architecture.md, "Provider chain"). The order
    # every message tries, comma-separated; a client's own provider_order
    # reorders or narrows it but cannot add a provider not named here.
    provider_order: str = Field(default="smtp", pattern=PROVIDER_ORDER_PATTERN)
    # SES v2 goes through boto3 (AWS_ENDPOINT_URL, AWS_REGION); only the
    # optional configuration set is ours.
    ses_configuration_set: str | None = None
    sendgrid_api_key: SecretStr | None = None
    sendgrid_base_url: str = "https://api.sendgrid.com"
    mailgun_api_key: SecretStr | None = None
    mailgun_domain: str | None = None
    # https://api.eu.mailgun.net for domains in Mailgun's EU region.
    mailgun_base_url: str = "https://api.mailgun.net"
    # Connect and read timeout of one HTTPS provider request.
    http_provider_timeout_seconds: float = Field(default=10.0, gt=0)
    # Circuit breakers, one per provider, state in Redis. pybreaker calls
    # these fail_max, reset_timeout and success_threshold.
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    breaker_success_threshold: int = Field(default=3, ge=1)
    # Backoff between attempts when every provider failed: base x 2^(n-1),
    # capped, scaled down by up to `retry_jitter` so retries spread out.
    # SQS caps one visibility timeout at 12 hours.
    retry_base_delay_seconds: int = Field(default=60, ge=0, le=43200)
    retry_max_delay_seconds: int = Field(default=3600, ge=0, le=43200)
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    # Where the worker moves messages whose retries ran out, and what the
    # admin DLQ routes read; the SendQueue's redrive target in template.yaml.
    dead_letter_queue_url: str = ""
    # Issue 20: the high and low priority bands' redrive DLQs (records SQS
    # moved there after maxReceiveCount receives); the admin DLQ routes read
    # them with ?band=high|low. The normal band's is dead_letter_queue_url.
    high_priority_dead_letter_queue_url: str = ""
    low_priority_dead_letter_queue_url: str = ""
    # The send queue's maxReceiveCount, as template.yaml sets it. Given, the
    # worker knows which receive is the last without asking SQS, so its first
    # batch does not load boto3 (~0.4 s here) unless a record must be
    # postponed or dead-lettered. Unset, it is read from the queue.
    send_queue_max_receive_count: int | None = Field(default=None, ge=1)
    metrics_namespace: str = "Mailroom"
    # Observability (docs/architecture.md, "Observability"). Where the
    # metrics go: EMF lines in Lambda, a Prometheus registry served at
    # /metrics by the local runner and the container roles, or nowhere.
    metrics_backend: Literal["emf", "prometheus", "off"] = "emf"
    # Label the per-message counters with the client's id: only with a
    # bounded number of clients (each one is a time series per metric).
    metrics_client_label: bool = False
    # OpenTelemetry spans: off, printed (console) or sent over OTLP/HTTP
    # (the ADOT collector layer in Lambda listens on localhost:4318).
    tracing_exporter: Literal["off", "console", "otlp"] = "off"
    otlp_traces_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # Share of traces recorded where no caller decided (a traceparent or
    # X-Ray header saying "sampled" is always followed). Every recorded span
    # costs the API and the worker about 0.3 M instructions (docs/benchmarks.md,
    # "Issue 23"): 5 %, X-Ray's own default rate, keeps tracing within 5 %.
    tracing_sample_ratio: float = Field(default=0.05, ge=0, le=1)
    tracing_service_name: str = Field(
        default="mailroom", validation_alias="POWERTOOLS_SERVICE_NAME"
    )
    # What /v1/info and /health/detailed name as the build (a commit, a tag).
    build_version: str = "dev"
    # /health/detailed asks each provider whether it answers at most this often.
    provider_probe_ttl_seconds: float = Field(default=60.0, ge=1)

    @property
    def provider_names(self) -> tuple[str, ...]:
        """PROVIDER_ORDER as names, first mention wins."""
        names = (name.strip() for name in self.provider_order.split(","))
        return tuple(dict.fromkeys(names))

    # argon2id parameters for API secrets. The defaults are OWASP's minimum
    # (19 MiB, 2 passes, 1 lane); the validators refuse anything weaker.
    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_memory_cost_kib: int = Field(default=19 * 1024, ge=19 * 1024)
    argon2_parallelism: int = Field(default=1, ge=1)

    # SHA-256 (hex) of the operators' bearer token for /admin routes. Only the
    # hash is configured: the token is 32+ random bytes, so a fast hash is
    # enough (nothing to brute-force) and the plain token never sits in Lambda
    # configuration. Unset means every admin route answers 401.
    admin_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    # Clients, keys, rate limits and quotas (docs/architecture.md, "Clients and
    # keys"). A verified key pair is remembered in process for this long, so a
    # warm instance pays argon2 once per TTL rather than per request; every
    # request still checks the client's credential version in Redis, so a
    # suspension or rotation applies at once. 0 turns the cache off.
    verified_credential_ttl_seconds: float = Field(default=60.0, ge=0, le=3600)
    verified_credential_cache_size: int = Field(default=10_000, ge=1)
    # How long a rotated-out secret keeps working unless the rotation says otherwise.
    secret_rotation_grace_seconds: int = Field(default=86_400, ge=0, le=30 * 86_400)
    # last_used_at is written at most this often per client and instance.
    last_used_write_interval_seconds: float = Field(default=300.0, gt=0)
    # Requests per minute across every client together; unset means none.
    global_rate_limit_per_minute: int | None = Field(default=None, ge=1)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import time)."""
    return Settings()
