"""Wires Mailroom's real adapters; tests pass their own instead.

Nothing here opens a connection: engines and clients are created on first use,
so importing a handler stays cheap and a cold start pays only for what it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork, UnitOfWork
from mailroom.adapters.providers.base import EmailProvider
from mailroom.adapters.providers.smtp import SmtpProvider
from mailroom.adapters.queue import MessageQueue, SqsMessageQueue
from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.secrets import Argon2SecretHasher, SecretHasher
from mailroom.adapters.templates import (
    FileTemplateStore,
    TemplateRenderer,
    TemplateStore,
)
from mailroom.config import Settings, get_settings
from mailroom.services.sending import SendLimits


@dataclass
class Services:
    settings: Settings
    uow: Callable[[], UnitOfWork]
    hasher: SecretHasher
    queue: MessageQueue
    templates: TemplateStore
    renderer: TemplateRenderer
    provider: Callable[[], EmailProvider]
    health_probes: dict[str, Callable[[], None]] = field(default_factory=dict)

    @property
    def send_limits(self) -> SendLimits:
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
    provider: Callable[[], EmailProvider] | None = None,
    health_probes: dict[str, Callable[[], None]] | None = None,
) -> Services:
    settings = settings or get_settings()
    database = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    redis_store = RedisStore(settings.redis_url)
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
        templates=templates or FileTemplateStore(settings.templates_dir),
        renderer=renderer or TemplateRenderer(),
        provider=provider or (lambda: _smtp_provider(settings)),
        health_probes=health_probes
        if health_probes is not None
        else {"postgres": database.ping, "redis": redis_store.ping},
    )


def _smtp_provider(settings: Settings) -> EmailProvider:
    return SmtpProvider(
        settings.smtp_host,
        settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout_seconds=settings.smtp_timeout_seconds,
    )


@cache
def default_services() -> Services:
    """The real adapters, built once per container on first use."""
    return bootstrap()
