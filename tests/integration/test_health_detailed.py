"""GET /health/detailed, /ready and /live on real dependencies, each taken down in turn.

Redis is a redis-server of this test's own, stopped mid-test (as the chaos
run does); PostgreSQL "down" is a URL nothing listens on; the SMTP relay is
an aiosmtpd the test stops.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mailroom.adapters.db.unit_of_work import Database
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.api import create_api
from mailroom.entrypoints.operations import operations_routes
from tests.events import FakeLambdaContext, request_event
from tests.fakes import PlainHasher
from tests.integration.conftest import SmtpSink, free_port, running_sink

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "health-test-admin-token-0123456789abcdef"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


class PrivateRedis:
    """A redis-server on a free loopback port that the test may stop."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH"
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="mailroom-health-redis-")
        self.process = subprocess.Popen(
            [
                *(binary, "--bind", "127.0.0.1", "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--dir", self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.stop()


@pytest.fixture
def relay() -> Iterator[SmtpSink]:
    with running_sink() as sink:
        yield sink


def services_for(database_url: str, redis_url: str, queue_url: str, smtp_port: int) -> Services:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_url=queue_url,
        dead_letter_queue_url=queue_url + "-dlq",
        templates_dir=TEMPLATES,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_timeout_seconds=1,
        provider_order="smtp",
        admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        metrics_backend="off",
    )
    return bootstrap(settings, hasher=PlainHasher())


def ask(
    services: Services, path: str, authorization: str | None = None
) -> tuple[int, dict[str, Any]]:
    api = create_api(
        [operations_routes(lambda: services)],
        max_request_bytes=lambda: 65536,
        metrics=lambda: services.metrics,
    )
    answer = api.resolve(
        request_event("GET", path, Authorization=authorization), FakeLambdaContext()
    )
    return answer["statusCode"], json.loads(answer["body"])


def detailed(services: Services) -> tuple[int, dict[str, Any]]:
    return ask(services, "/health/detailed", f"Bearer {ADMIN_TOKEN}")


def url_of(database: Database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


def test_everything_up_reads_ok_with_latencies_queues_breakers_and_migrations(
    database: Database, private_redis: PrivateRedis, queue_url: str, relay: SmtpSink
) -> None:
    # GIVEN every dependency up
    services = services_for(url_of(database), private_redis.url, queue_url, relay.port)
    # WHEN an operator asks
    status, body = detailed(services)
    # THEN all is well, with what each answer cost
    assert status == 200, body
    assert body["status"] == "ok"
    for name in ("postgres", "redis"):
        assert body["dependencies"][name]["ok"] is True
        assert body["dependencies"][name]["latency_ms"] >= 0
    assert body["queues"]["send"]["depth"] == 0
    assert body["queues"]["send"]["oldest_age_seconds"] == 0
    assert body["queues"]["dead-letter"]["depth"] == 0
    assert body["providers"]["smtp"]["breaker"] == "closed"
    assert body["providers"]["smtp"]["reachable"]["ok"] is True
    assert body["migrations"]["at_head"] is True
    assert body["migrations"]["current"] == body["migrations"]["heads"]
    assert body["version"] == {"api": "0.1.0", "build": "dev"}
    # AND /ready agrees, /live asks nothing
    assert ask(services, "/ready") == (
        200,
        {"ready": True, "checks": {"postgres": "ok", "redis": "ok", "migrations": "ok"}},
    )
    assert ask(services, "/live") == (200, {"status": "ok"})


def test_without_the_admin_token_it_answers_401(
    database: Database, private_redis: PrivateRedis, queue_url: str, relay: SmtpSink
) -> None:
    services = services_for(url_of(database), private_redis.url, queue_url, relay.port)
    status, body = ask(services, "/health/detailed")
    assert status == 401
    assert body["error"]["code"] == "unauthorized"


def test_redis_stopped_reads_down_and_unavailable(
    database: Database, private_redis: PrivateRedis, queue_url: str, relay: SmtpSink
) -> None:
    # GIVEN Mailroom on a private Redis, which then stops
    services = services_for(url_of(database), private_redis.url, queue_url, relay.port)
    assert detailed(services)[0] == 200
    private_redis.stop()
    # WHEN an operator asks
    status, body = detailed(services)
    # THEN Redis reads down with why, and the whole is unavailable (503)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["dependencies"]["redis"]["ok"] is False
    assert "Connection" in body["dependencies"]["redis"]["error"]
    assert body["dependencies"]["postgres"]["ok"] is True
    # AND /ready says not ready
    status, ready = ask(services, "/ready")
    assert status == 503
    assert ready["checks"]["redis"].startswith("error:")


def test_postgres_down_reads_down_and_the_migrations_unknown(
    private_redis: PrivateRedis, queue_url: str, relay: SmtpSink
) -> None:
    # GIVEN a database URL nothing listens on
    nowhere = f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/mailroom"
    services = services_for(nowhere, private_redis.url, queue_url, relay.port)
    # WHEN an operator asks
    status, body = detailed(services)
    # THEN PostgreSQL reads down, the schema and the oldest message unknown
    assert status == 503
    assert body["dependencies"]["postgres"]["ok"] is False
    assert body["dependencies"]["redis"]["ok"] is True
    assert body["migrations"]["at_head"] is False
    assert body["migrations"]["error"]
    assert body["queues"]["send"]["oldest_age_seconds"] is None


def test_an_unreachable_provider_a_missing_queue_and_a_full_dlq_read_degraded(
    database: Database, private_redis: PrivateRedis, queue_url: str
) -> None:
    import boto3

    # GIVEN the SMTP relay not listening, a send queue that does not exist,
    # and two messages on the DLQ
    sqs = boto3.client("sqs", region_name="us-east-1")
    for _ in range(2):
        sqs.send_message(QueueUrl=queue_url + "-dlq", MessageBody="{}")
    services = services_for(url_of(database), private_redis.url, queue_url, free_port())
    services = bootstrap(
        services.settings.model_copy(update={"queue_url": queue_url + "-gone"}),
        hasher=PlainHasher(),
    )
    # WHEN an operator asks
    status, body = detailed(services)
    # THEN the service is up but degraded, and each problem is named
    assert status == 200
    assert body["status"] == "degraded"
    assert body["providers"]["smtp"]["reachable"]["ok"] is False
    assert body["queues"]["send"]["depth"] is None
    assert body["queues"]["send"]["error"]
    assert body["queues"]["dead-letter"]["depth"] == 2


def test_provider_answers_are_cached_not_asked_on_every_call(
    database: Database, private_redis: PrivateRedis, queue_url: str
) -> None:
    # GIVEN a relay that answers the first probe, then stops
    with running_sink() as relay:
        services = services_for(url_of(database), private_redis.url, queue_url, relay.port)
        assert detailed(services)[1]["providers"]["smtp"]["reachable"]["ok"] is True
    # WHEN asked again within PROVIDER_PROBE_TTL_SECONDS
    status, body = detailed(services)
    # THEN the cached answer stands (a dashboard polling must not hammer the relay)
    assert status == 200
    assert body["providers"]["smtp"]["reachable"]["ok"] is True
