"""What the two worker benchmarks share: a fresh database, services wired to one
SMTP sink, a client row, and a Lambda-like context. Not a benchmark itself
(``run_all`` skips files starting with an underscore)."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head
from mailroom.adapters.providers.base import EmailProvider
from mailroom.adapters.providers.dkim_signing import SigningProvider
from mailroom.adapters.providers.smtp import Security, SmtpProvider
from mailroom.adapters.queue_records import QueueRecords
from mailroom.bootstrap import Services, bootstrap, dkim_keys
from mailroom.config import Settings
from mailroom.domain.model import Client


class NoRedriveLimit(QueueRecords):
    """Records never come back in these benches (every send succeeds)."""

    def postpone(self, receipt_handle: str, seconds: int) -> bool:
        raise AssertionError("no retries expected in the bench")

    def max_receive_count(self) -> int | None:
        return None


class BenchContext:
    function_name = "bench-worker"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-worker"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/bench-worker"
    log_stream_name = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 120_000


def prepare_database(database_url: str, redis_url: str) -> None:
    """An empty, migrated database and no breaker state left from an earlier run."""
    ensure_database_exists(database_url)
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade_to_head(database_url)
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("mailroom:breaker:*"):
        client.delete(key)


def build_services(
    database_url: str,
    redis_url: str,
    templates_dir: Path,
    port: int,
    *,
    reuse: bool,
    security: Security = "none",
    dkim_signing: bool = False,
    render_timeout_ms: int | None = None,
) -> Services:
    """The worker's services against the bench sink; ``dkim_signing`` puts the
    DKIM signer in front of SMTP as bootstrap does when a keyring is set (issue 16);
    ``render_timeout_ms`` replaces the render deadline (under callgrind a render
    is some fifty times slower and can pass the default 200 ms)."""
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        templates_dir=templates_dir,
        provider_order="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        # As a deployed stack has one: compiled code is then shared through Redis.
        template_code_signing_key=SecretStr("bench-template-code-signing-key-0123456789"),
        # Fixed, so every bench process opens the keys the main one sealed.
        secrets_encryption_keys=SecretStr(BENCH_KEYRING),
    )
    if render_timeout_ms is not None:
        settings = settings.model_copy(update={"template_render_timeout_ms": render_timeout_ms})
    provider: EmailProvider = SmtpProvider(
        "127.0.0.1", port, security=security, reuse_connection=reuse
    )
    providers: dict[str, EmailProvider] = {}
    services = bootstrap(
        settings, providers=providers, queue_records=NoRedriveLimit(), health_probes={}
    )
    if dkim_signing:
        keys = dkim_keys(settings, services.uow)
        assert keys is not None
        provider = SigningProvider(provider, keys)
    # The chain is built on first use, from this same dict.
    providers["smtp"] = provider
    return services


BENCH_KEYRING = "bench:" + "A" * 43


def new_client(services: Services) -> uuid.UUID:
    client = Client(
        id=uuid.uuid4(),
        name=f"bench-{uuid.uuid4().hex[:8]}",  # client names are unique (issue 14)
        api_key_prefix=f"mr_live_{uuid.uuid4().hex[:16]}",
        rate_limit=10**6,
        quota_limit=10**9,
    )
    with services.uow() as uow:
        uow.clients.add(client)
        uow.commit()
    return client.id
