"""Wires Mailroom's real adapters; tests pass their own instead.

Nothing here opens a connection: engines and clients are created on first use,
so importing a handler stays cheap and a cold start pays only for what it uses.
The renderer and the provider chain are built on first use too, and their
modules imported then: only the functions that render or send load jinja2,
css-inline, urllib3 and the provider clients (issue 8).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING

from pydantic import SecretStr

from mailroom.adapters.db.inline_contents import SqlInlineContentStore
from mailroom.adapters.db.template_versions import SqlTemplateStore
from mailroom.adapters.db.tracking import SqlTrackingStore, TrackingStore
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork, UnitOfWork
from mailroom.adapters.dead_letter_queue import DeadLetterQueue, SqsDeadLetterQueue
from mailroom.adapters.dependency_probes import DependencyProbes
from mailroom.adapters.inline_content import InlineContentStore, WithInlineContent
from mailroom.adapters.metrics.base import Metrics
from mailroom.adapters.metrics.signals import MeteredSignals
from mailroom.adapters.operator_signals import OperatorSignals, PowertoolsSignals
from mailroom.adapters.queue import (
    MessageQueue,
    PlannerQueue,
    SqsMessageQueue,
    SqsPlannerQueue,
)
from mailroom.adapters.queue_records import QueueRecords, SqsQueueRecords
from mailroom.adapters.recipient_files import RecipientFiles, S3RecipientFiles
from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.redis_tenancy import (
    RedisCredentialVersions,
    RedisQuotaCounter,
    RedisRateLimiter,
)
from mailroom.adapters.redis_tracking import RedisHitQueue
from mailroom.adapters.secrets import Argon2SecretHasher, SecretHasher
from mailroom.adapters.templates import (
    FileTemplateStore,
    LayeredTemplateStore,
    TemplateRenderer,
    TemplateStore,
)
from mailroom.adapters.tenancy import CredentialVersions, QuotaCounter, RateLimiter
from mailroom.adapters.tracking_doorbell import IngestDoorbell, SqsIngestDoorbell
from mailroom.adapters.webhook_queue import SqsWebhookQueue, WebhookQueue
from mailroom.adapters.webhooks.fetch import UrllibAwsFetcher
from mailroom.adapters.webhooks.registry import WebhookRegistry
from mailroom.adapters.webhooks.replay import RedisReplayGuard
from mailroom.config import Settings, get_settings
from mailroom.domain.queues import Band
from mailroom.entrypoints.observability import logger
from mailroom.services.api_keys import RefusalAudit
from mailroom.services.authentication import Authenticator, VerifiedCredentialCache
from mailroom.services.scheduler import Clock, SystemClock

if TYPE_CHECKING:
    from mailroom.adapters.breakers import ProviderBreakers
    from mailroom.adapters.dns_records import DnsLookup
    from mailroom.adapters.domain_throttle import DomainThrottle
    from mailroom.adapters.providers.base import EmailProvider
    from mailroom.adapters.providers.dkim_signing import DkimKeyCache
    from mailroom.adapters.webhook_sender import WebhookSender
    from mailroom.domain.model import Message, RenderedEmail
    from mailroom.domain.outgoing_headers import SenderPolicy
    from mailroom.services.batches import BatchLimits
    from mailroom.services.delivery import HtmlRewriter
    from mailroom.services.inbound import InboundPolicy
    from mailroom.services.outbound_webhooks import Dispatcher
    from mailroom.services.provider_chain import ProviderChain
    from mailroom.services.queues import ClaimGate
    from mailroom.services.sending import SendLimits
    from mailroom.services.sending_domains import DomainFacts, DomainPolicy, VerifiedSenders
    from mailroom.services.tracking import HitRecorder, TrackingConfig


@dataclass
class Services:
    settings: Settings
    uow: Callable[[], UnitOfWork]
    hasher: SecretHasher
    queue: MessageQueue
    templates: TemplateStore
    signals: OperatorSignals
    # The send queue's records in the worker's hands, and its DLQ.
    queue_records: QueueRecords
    dead_letters: DeadLetterQueue
    # Tenancy state shared by every instance (Redis): token buckets, monthly
    # quota counters, and the credential versions the verified-credential
    # cache checks on every request.
    rate_limiter: RateLimiter
    quota: QuotaCounter
    credential_versions: CredentialVersions
    # Called once, on first use of ``renderer`` and ``providers``.
    build_renderer: Callable[[], TemplateRenderer] = field(repr=False)
    build_providers: Callable[[], ProviderChain] = field(repr=False)
    health_probes: dict[str, Callable[[], None]] = field(default_factory=dict)
    # Provider delivery webhooks (verifiers, SNS certificate cache); always
    # set by bootstrap().
    webhooks: WebhookRegistry | None = None
    # Sends' inline content (issue 17); ``templates`` resolves its names too.
    # Always set by bootstrap().
    inline_contents: InlineContentStore | None = None

    # Sending-domain verification's DNS (issue 16); built on first use unless given.
    dns_lookup: DnsLookup | None = None
    # Open and click tracking (issue 21): tokens and hits; the hit queue
    # (Redis stream, with the per-token limit) and the doorbell that wakes
    # its consumer. Always set by bootstrap().
    tracking_store: TrackingStore | None = None
    hit_queue: RedisHitQueue | None = None
    ingest_doorbell: IngestDoorbell | None = None

    @cached_property
    def hit_recorder(self) -> HitRecorder:
        """The tracking function's side; one per container (it caches link rows)."""
        from mailroom.services.tracking import HitRecorder

        return HitRecorder(
            self.tracking_store, self.hit_queue, self.ingest_doorbell, self.tracking_config
        )

    @cached_property
    def tracking_config(self) -> TrackingConfig:
        return tracking_config(self.settings)

    @cached_property
    def tracking_rewriter(self) -> HtmlRewriter | None:
        """The worker's tracking step; None when no tracking base URL is configured."""
        config = self.tracking_config
        if not config.base_url or self.tracking_store is None:
            return None
        from mailroom.services.tracking import tracked_email

        store = self.tracking_store
        # A client's own tracking host for its verified domain (issue 21).
        facts = self.domain_facts

        def rewrite(message: Message, rendered: RenderedEmail) -> RenderedEmail:
            base = facts.tracking_base_url_for(message.client_id, message.from_address)
            return tracked_email(store, config, message, rendered, base_url=base)

        return rewrite

    # Issue 20: sends are routed through the client's queues, and the worker
    # gates its claims on them. Only on PostgreSQL (bootstrap without a
    # unit of work given): the tests' in-memory units of work have no queues.
    queue_routing: bool = False
    redis_store: RedisStore | None = None
    claim_gate_given: ClaimGate | None = None
    # The high and low bands' DLQs, built on first use unless given.
    band_dead_letters: dict[Band, DeadLetterQueue] = field(default_factory=dict)

    def dead_letters_of(self, band: Band) -> DeadLetterQueue:
        """A priority band's DLQ: the normal band's is ``dead_letters`` (the app's own)."""
        if band is Band.NORMAL:
            return self.dead_letters
        found = self.band_dead_letters.get(band)
        if found is None:
            url = (
                self.settings.high_priority_dead_letter_queue_url
                if band is Band.HIGH
                else self.settings.low_priority_dead_letter_queue_url
            )
            found = self.band_dead_letters[band] = SqsDeadLetterQueue(url, self.settings.aws_region)
        return found

    @cached_property
    def claim_gate(self) -> ClaimGate | None:
        """Pause, send rates and the in-flight cap at claim time; None without routing."""
        if self.claim_gate_given is not None:
            return self.claim_gate_given
        if not self.queue_routing or self.redis_store is None:
            return None
        from mailroom.adapters.claim_limits import RedisClaimRateLimiter
        from mailroom.services.queues import ClaimGate

        return ClaimGate(
            RedisClaimRateLimiter(self.redis_store),
            client_sends_per_minute=self.settings.client_sends_per_minute,
            client_max_in_flight=self.settings.client_max_in_flight,
        )

    @cached_property
    def dns(self) -> DnsLookup:
        if self.dns_lookup is not None:
            return self.dns_lookup
        from mailroom.adapters.dns_records import DnspythonLookup

        return DnspythonLookup(
            self.settings.dns_nameservers, timeout_seconds=self.settings.dns_timeout_seconds
        )

    @cached_property
    def domain_policy(self) -> DomainPolicy:
        return domain_policy(self.settings)

    @cached_property
    def verified_senders(self) -> VerifiedSenders:
        """The send-time From check; its cache of verified domains is per process."""
        from mailroom.services.sending_domains import VerifiedSenders

        return VerifiedSenders()

    # Outbound webhooks (issue 19): the dispatcher's queue, and what posts them.
    webhook_queue: WebhookQueue | None = None
    webhook_sender: WebhookSender | None = None

    @cached_property
    def webhook_dispatcher(self) -> Dispatcher:
        """One per container: its connection pools per endpoint live as long."""
        from mailroom.adapters.webhook_sender import Urllib3WebhookSender
        from mailroom.services.outbound_webhooks import Dispatcher

        settings = self.settings
        assert self.webhook_queue is not None
        return Dispatcher(
            uow=self.uow,
            sender=self.webhook_sender
            or Urllib3WebhookSender(
                timeout_seconds=settings.webhook_timeout_seconds,
                allow_private=settings.webhook_allow_private_urls,
            ),
            queue=self.webhook_queue,
            keyring=settings.secret_keyring,
            allow_private=settings.webhook_allow_private_urls,
            concurrency=settings.webhook_dispatch_concurrency,
            batch_wait_seconds=settings.webhook_batch_wait_seconds,
        )

    # Bulk batches (issue 17).
    planner_queue: PlannerQueue = field(default_factory=lambda: SqsPlannerQueue("", "us-east-1"))
    recipient_files: RecipientFiles = field(
        default_factory=lambda: S3RecipientFiles("", "us-east-1")
    )

    # Issue 18: what scheduling reads the time from (tests move their own).
    clock: Clock = field(default_factory=SystemClock)

    # Operator metrics (adapters/metrics): EMF, Prometheus or none, per METRICS_BACKEND.
    metrics: Metrics = field(default_factory=Metrics)
    # What /health/detailed and /ready ask (provider answers cached per process).
    probes: DependencyProbes | None = None

    @cached_property
    def renderer(self) -> TemplateRenderer:
        return self.build_renderer()

    @cached_property
    def providers(self) -> ProviderChain:
        """The provider chain (failover + breakers), kept for the container's life."""
        return self.build_providers()

    @cached_property
    def authenticator(self) -> Authenticator:
        """One per container: its cache of verified credentials is per process."""
        return Authenticator(
            self.uow,
            self.hasher,
            self.credential_versions,
            VerifiedCredentialCache(
                ttl_seconds=self.settings.verified_credential_ttl_seconds,
                max_entries=self.settings.verified_credential_cache_size,
            ),
            last_used_interval_seconds=self.settings.last_used_write_interval_seconds,
        )

    @cached_property
    def refusal_audit(self) -> RefusalAudit:
        """Scope and IP refusals, audited at most once per key and reason per minute here."""
        return RefusalAudit(self.uow)

    @cached_property
    def domain_facts(self) -> DomainFacts:
        """The worker's per-domain answers (bounce domain, tracking host), one read per TTL."""
        from mailroom.services.sending_domains import DomainFacts

        return DomainFacts(self.uow, ttl_seconds=self.settings.dkim_key_cache_seconds)

    @cached_property
    def sender_policy(self) -> SenderPolicy:
        """What the worker adds to outgoing mail: VERP, list headers, Feedback-ID (issue 16)."""
        from mailroom.domain.outgoing_headers import SenderPolicy

        return SenderPolicy(
            keyring=self.settings.bounce_keyring,
            public_base_url=self.settings.public_base_url,
            bounce_domain=self.settings.bounce_domain or None,
            receives_bounces=self.domain_facts.receives_for,
        )

    @cached_property
    def inbound_policy(self) -> InboundPolicy:
        """How the inbound function treats bounce mail (issue 16)."""
        from mailroom.services.inbound import InboundPolicy

        return InboundPolicy(
            keyring=self.settings.bounce_keyring,
            soft_bounce_limit=self.settings.soft_bounce_limit,
            soft_bounce_suppression_days=self.settings.soft_bounce_suppression_days,
            max_stored_bytes=self.settings.inbound_max_stored_bytes,
        )

    @property
    def batch_limits(self) -> BatchLimits:
        from mailroom.services.batches import BatchLimits

        return BatchLimits(
            default_from=self.settings.default_from,
            upload_url_seconds=self.settings.batch_upload_url_seconds,
            schedule_lookahead_seconds=self.settings.scheduler_lookahead_seconds,
        )

    @property
    def send_limits(self) -> SendLimits:
        # Only send uses it: the other functions need not import the send service.
        from mailroom.services.sending import SendLimits

        return SendLimits(
            max_recipients=self.settings.max_recipients,
            default_from=self.settings.default_from,
            schedule_lookahead_seconds=self.settings.scheduler_lookahead_seconds,
        )


def bootstrap(
    settings: Settings | None = None,
    *,
    uow: Callable[[], UnitOfWork] | None = None,
    hasher: SecretHasher | None = None,
    queue: MessageQueue | None = None,
    templates: TemplateStore | None = None,
    renderer: TemplateRenderer | None = None,
    providers: Mapping[str, EmailProvider] | None = None,
    breakers: ProviderBreakers | None = None,
    signals: OperatorSignals | None = None,
    queue_records: QueueRecords | None = None,
    dead_letters: DeadLetterQueue | None = None,
    rate_limiter: RateLimiter | None = None,
    quota: QuotaCounter | None = None,
    credential_versions: CredentialVersions | None = None,
    health_probes: dict[str, Callable[[], None]] | None = None,
    webhooks: WebhookRegistry | None = None,
    inline_contents: InlineContentStore | None = None,
    dns: DnsLookup | None = None,
    webhook_queue: WebhookQueue | None = None,
    webhook_sender: WebhookSender | None = None,
    planner_queue: PlannerQueue | None = None,
    recipient_files: RecipientFiles | None = None,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    domain_throttle: DomainThrottle | None = None,
    tracking: TrackingStore | None = None,
    hit_queue: RedisHitQueue | None = None,
    ingest_doorbell: IngestDoorbell | None = None,
    claim_gate: ClaimGate | None = None,
) -> Services:
    settings = settings or get_settings()
    from mailroom.adapters import tracing

    tracing.configure(settings)
    metered = metrics if metrics is not None else _metrics(settings)
    database = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    redis_store = RedisStore(settings.redis_url)
    operator_signals = MeteredSignals(
        signals or PowertoolsSignals(logger, namespace=settings.metrics_namespace), metered
    )
    contents = inline_contents or SqlInlineContentStore(database)

    def build_providers() -> ProviderChain:
        from mailroom.adapters.breakers import ProviderBreakers
        from mailroom.adapters.domain_throttle import RedisDomainThrottle
        from mailroom.adapters.providers.client_relays import ClientRelays
        from mailroom.services.provider_chain import ProviderChain

        signing_keys = dkim_keys(settings, uow_factory)
        return ProviderChain(
            providers if providers is not None else _providers(settings, signing_keys),
            settings.provider_names,
            breakers
            or ProviderBreakers.in_redis(
                settings.redis_url,
                operator_signals,
                failure_threshold=settings.breaker_failure_threshold,
                cooldown_seconds=settings.breaker_cooldown_seconds,
                success_threshold=settings.breaker_success_threshold,
            ),
            operator_signals,
            metrics=metered,
            # Clients' own SMTP relays (issue 20), each behind its own breaker.
            relays=ClientRelays(
                uow_factory,
                settings.secret_keyring,
                signing_keys=signing_keys,
                ttl_seconds=settings.smtp_config_cache_seconds,
                allow_internal=settings.smtp_relay_allow_internal_hosts,
            ),
            throttle=domain_throttle
            or RedisDomainThrottle(
                redis_store,
                settings.throttle_policy,
                cut_hold_seconds=settings.throttle_cut_hold_seconds,
            ),
        )

    uow_factory: Callable[[], UnitOfWork] = uow or (lambda: SqlUnitOfWork(database))
    return Services(
        settings=settings,
        uow=uow_factory,
        hasher=hasher
        or Argon2SecretHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
        ),
        queue=queue
        or SqsMessageQueue(
            settings.queue_url,
            settings.aws_region,
            {
                Band.HIGH: settings.high_priority_queue_url,
                Band.LOW: settings.low_priority_queue_url,
            },
            fair_queues=settings.sqs_fair_queues,
        ),
        templates=WithInlineContent(
            templates
            or LayeredTemplateStore(
                FileTemplateStore(settings.templates_dir), SqlTemplateStore(database)
            ),
            contents,
        ),
        inline_contents=contents,
        build_renderer=lambda: renderer or _template_renderer(settings, redis_store),
        build_providers=build_providers,
        signals=operator_signals,
        queue_records=queue_records
        or SqsQueueRecords(
            settings.queue_url,
            settings.aws_region,
            settings.send_queue_max_receive_count,
            band_urls=(settings.high_priority_queue_url, settings.low_priority_queue_url),
        ),
        dead_letters=dead_letters
        or SqsDeadLetterQueue(settings.dead_letter_queue_url, settings.aws_region),
        rate_limiter=rate_limiter or RedisRateLimiter(redis_store),
        quota=quota or RedisQuotaCounter(redis_store),
        credential_versions=credential_versions or RedisCredentialVersions(redis_store),
        health_probes=health_probes
        if health_probes is not None
        else {"postgres": database.ping, "redis": redis_store.ping},
        planner_queue=planner_queue
        or SqsPlannerQueue(settings.planner_queue_url, settings.aws_region),
        recipient_files=recipient_files
        or S3RecipientFiles(settings.batch_uploads_bucket, settings.aws_region),
        webhooks=webhooks
        or WebhookRegistry(
            settings, fetcher=UrllibAwsFetcher(), replay_guard=RedisReplayGuard(redis_store)
        ),
        dns_lookup=dns,
        webhook_queue=webhook_queue
        or SqsWebhookQueue(settings.webhook_queue_url, settings.aws_region),
        webhook_sender=webhook_sender,
        clock=clock or SystemClock(),
        metrics=metered,
        probes=DependencyProbes(settings, database),
        tracking_store=tracking or SqlTrackingStore(database),
        hit_queue=hit_queue
        or RedisHitQueue(redis_store, max_length=settings.tracking_stream_max_length),
        ingest_doorbell=ingest_doorbell
        or SqsIngestDoorbell(
            settings.tracking_ingest_queue_url,
            settings.tracking_ingest_dead_letter_queue_url,
            settings.aws_region,
        ),
        queue_routing=uow is None,
        redis_store=redis_store,
        claim_gate_given=claim_gate,
    )


def tracking_config(settings: Settings) -> TrackingConfig:
    from mailroom.domain.tracking import TrackingChoice
    from mailroom.domain.tracking_signals import MachineSignals
    from mailroom.services.tracking import TrackingConfig

    return TrackingConfig(
        base_url=settings.tracking_base,
        default=TrackingChoice(settings.tracking_default_opens, settings.tracking_default_clicks),
        excluded_domains=settings.tracking_excluded,
        signals=MachineSignals.from_settings(
            settings.tracking_machine_ip_ranges, settings.tracking_machine_seconds
        ),
        honeypot_window_seconds=settings.tracking_honeypot_window_seconds,
        hits_per_token_minute=settings.tracking_hits_per_token_minute,
    )


def _metrics(settings: Settings) -> Metrics:
    """The backend METRICS_BACKEND names; each module is imported only where it is used."""
    if settings.metrics_backend == "prometheus":
        from mailroom.adapters.metrics.prometheus import PrometheusMetrics

        return PrometheusMetrics(client_label=settings.metrics_client_label)
    if settings.metrics_backend == "emf":
        from mailroom.adapters.metrics.emf import EmfMetrics

        return EmfMetrics(settings.metrics_namespace, client_label=settings.metrics_client_label)
    return Metrics()


def dkim_keys(settings: Settings, uow: Callable[[], UnitOfWork]) -> DkimKeyCache | None:
    """The worker's DKIM keys, per process; None (nothing signed) without a keyring."""
    keyring = settings.secret_keyring
    if keyring is None:
        return None
    from mailroom.adapters.providers.dkim_signing import DkimKeyCache

    return DkimKeyCache(uow, keyring, ttl_seconds=settings.dkim_key_cache_seconds)


def domain_policy(settings: Settings) -> DomainPolicy:
    from mailroom.adapters.ses_identities import SesIdentities
    from mailroom.domain.sending_domains import PublishingPlan
    from mailroom.services.sending_domains import DomainPolicy

    ses_first = settings.provider_names[:1] == ("ses",)
    return DomainPolicy(
        plan=PublishingPlan(
            spf_include=settings.spf_include or ("amazonses.com" if ses_first else ""),
            return_path_host=settings.bounce_mx_host,
            dmarc_report_address=settings.dmarc_report_address,
            tracking_target=settings.tracking_cname_target,
        ),
        keyring=settings.secret_keyring,
        ed25519=settings.dkim_ed25519,
        ses=SesIdentities(
            settings.aws_region, timeout_seconds=settings.http_provider_timeout_seconds
        )
        if settings.uses_ses_identities
        else None,
    )


def _providers(settings: Settings, keys: DkimKeyCache | None = None) -> dict[str, EmailProvider]:
    """The providers PROVIDER_ORDER names; each is cheap to build and connects on first send.

    SMTP and Mailgun carry our MIME as it is, so they get it DKIM-signed
    (issue 16); SES signs with its domain identity's Easy DKIM, and SendGrid
    rebuilds the message from parts and signs with its own domain setup.
    """
    from mailroom.adapters.providers.mailgun import MailgunProvider
    from mailroom.adapters.providers.sendgrid import SendGridProvider
    from mailroom.adapters.providers.ses import SesProvider

    builders: dict[str, Callable[[Settings], EmailProvider]] = {
        "smtp": _smtp_provider,
        "ses": lambda s: SesProvider(
            s.aws_region,
            configuration_set=s.ses_configuration_set,
            timeout_seconds=s.http_provider_timeout_seconds,
        ),
        "sendgrid": lambda s: SendGridProvider(
            _secret(s.sendgrid_api_key),
            base_url=s.sendgrid_base_url,
            timeout_seconds=s.http_provider_timeout_seconds,
        ),
        "mailgun": lambda s: MailgunProvider(
            _secret(s.mailgun_api_key),
            s.mailgun_domain,
            base_url=s.mailgun_base_url,
            timeout_seconds=s.http_provider_timeout_seconds,
        ),
    }
    built = {name: builders[name](settings) for name in settings.provider_names}
    if keys is not None:
        from mailroom.adapters.providers.dkim_signing import SigningProvider

        for name in ("smtp", "mailgun"):
            if name in built:
                built[name] = SigningProvider(built[name], keys)
    return built


def _template_renderer(settings: Settings, redis_store: RedisStore) -> TemplateRenderer:
    from mailroom.adapters.compiled_templates import EmfTemplateMetrics
    from mailroom.adapters.redis_template_code import RedisTemplateCode

    signing_key = settings.template_code_signing_key
    if signing_key is None:
        # Unsigned code from Redis would run whatever someone wrote there, so
        # without a key nothing is shared: each process compiles for itself.
        logger.warning(
            "TEMPLATE_CODE_SIGNING_KEY is not set: compiled templates are not shared "
            "through Redis, each instance compiles its own"
        )
    return TemplateRenderer(
        shared=RedisTemplateCode(redis_store) if signing_key is not None else None,
        signing_key=signing_key.get_secret_value().encode() if signing_key else None,
        metrics=EmfTemplateMetrics(settings.metrics_namespace),
        timeout_seconds=settings.template_render_timeout_ms / 1000,
        compile_timeout_seconds=settings.template_compile_timeout_ms / 1000,
        budget_bytes=settings.template_render_budget_bytes,
        cache_size=settings.template_cache_size,
        cache_ttl_seconds=settings.template_cache_ttl_seconds,
    )


def _smtp_provider(settings: Settings) -> EmailProvider:
    from mailroom.adapters.providers.smtp import SmtpProvider

    return SmtpProvider(
        settings.smtp_host,
        settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=_secret(settings.smtp_password),
        timeout_seconds=settings.smtp_timeout_seconds,
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


@cache
def default_services() -> Services:
    """The real adapters, built once per container on first use."""
    return bootstrap()
