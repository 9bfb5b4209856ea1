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

from mailroom.adapters.db.template_versions import SqlTemplateStore
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork, UnitOfWork
from mailroom.adapters.dead_letter_queue import DeadLetterQueue, SqsDeadLetterQueue
from mailroom.adapters.dependency_probes import DependencyProbes
from mailroom.adapters.metrics.base import Metrics
from mailroom.adapters.metrics.signals import MeteredSignals
from mailroom.adapters.operator_signals import OperatorSignals, PowertoolsSignals
from mailroom.adapters.queue import MessageQueue, SqsMessageQueue
from mailroom.adapters.queue_records import QueueRecords, SqsQueueRecords
from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.redis_tenancy import (
    RedisCredentialVersions,
    RedisQuotaCounter,
    RedisRateLimiter,
)
from mailroom.adapters.secrets import Argon2SecretHasher, SecretHasher
from mailroom.adapters.templates import (
    FileTemplateStore,
    LayeredTemplateStore,
    TemplateRenderer,
    TemplateStore,
)
from mailroom.adapters.tenancy import CredentialVersions, QuotaCounter, RateLimiter
from mailroom.adapters.webhooks.fetch import UrllibAwsFetcher
from mailroom.adapters.webhooks.registry import WebhookRegistry
from mailroom.adapters.webhooks.replay import RedisReplayGuard
from mailroom.config import Settings, get_settings
from mailroom.entrypoints.observability import logger
from mailroom.services.api_keys import RefusalAudit
from mailroom.services.authentication import Authenticator, VerifiedCredentialCache

if TYPE_CHECKING:
    from mailroom.adapters.breakers import ProviderBreakers
    from mailroom.adapters.providers.base import EmailProvider
    from mailroom.services.provider_chain import ProviderChain
    from mailroom.services.sending import SendLimits


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

    @property
    def send_limits(self) -> SendLimits:
        # Only send uses it: the other functions need not import the send service.
        from mailroom.services.sending import SendLimits

        return SendLimits(
            max_recipients=self.settings.max_recipients,
            default_from=self.settings.default_from,
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
    metrics: Metrics | None = None,
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

    def build_providers() -> ProviderChain:
        from mailroom.adapters.breakers import ProviderBreakers
        from mailroom.services.provider_chain import ProviderChain

        return ProviderChain(
            providers if providers is not None else _providers(settings),
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
        )

    return Services(
        settings=settings,
        uow=uow or (lambda: SqlUnitOfWork(database)),
        hasher=hasher
        or Argon2SecretHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
        ),
        queue=queue or SqsMessageQueue(settings.queue_url, settings.aws_region),
        templates=templates
        or LayeredTemplateStore(
            FileTemplateStore(settings.templates_dir), SqlTemplateStore(database)
        ),
        build_renderer=lambda: renderer or _template_renderer(settings, redis_store),
        build_providers=build_providers,
        signals=operator_signals,
        queue_records=queue_records
        or SqsQueueRecords(
            settings.queue_url, settings.aws_region, settings.send_queue_max_receive_count
        ),
        dead_letters=dead_letters
        or SqsDeadLetterQueue(settings.dead_letter_queue_url, settings.aws_region),
        rate_limiter=rate_limiter or RedisRateLimiter(redis_store),
        quota=quota or RedisQuotaCounter(redis_store),
        credential_versions=credential_versions or RedisCredentialVersions(redis_store),
        health_probes=health_probes
        if health_probes is not None
        else {"postgres": database.ping, "redis": redis_store.ping},
        webhooks=webhooks
        or WebhookRegistry(
            settings, fetcher=UrllibAwsFetcher(), replay_guard=RedisReplayGuard(redis_store)
        ),
        metrics=metered,
        probes=DependencyProbes(settings, database),
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


def _providers(settings: Settings) -> dict[str, EmailProvider]:
    """The providers PROVIDER_ORDER names; each is cheap to build and connects on first send."""
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
    return {name: builders[name](settings) for name in settings.provider_names}


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
