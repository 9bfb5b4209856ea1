"""Keys, buckets and quotas on real PostgreSQL and Redis, across threads and processes."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.redis_tenancy import RedisQuotaCounter, RedisRateLimiter
from mailroom.adapters.tenancy import Bucket
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.errors import ClientNameTaken
from mailroom.domain.tenancy import Actor, QuotaPeriod
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.services import clients, quotas
from tests.events import FakeLambdaContext, load_event, request_event, with_headers
from tests.fakes import RecordingQueue, ScriptedProvider
from tests.integration.api_processes import Burst, send_in_processes
from tests.integration.conftest import free_port
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-with-enough-entropy"
ADMIN = Actor("admin:integration", "127.0.0.1")


class Instance:
    """One API instance (its own services and credential cache) on the real backing services."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        )
        self.queue = RecordingQueue()
        self.services: Services = bootstrap(
            self.settings, queue=self.queue, providers={"smtp": ScriptedProvider()}
        )
        self.api = create_api(
            [send_routes(lambda: self.services), status_routes(lambda: self.services)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
            client_gate=ClientGate(lambda: self.services),
        )
        self.admin_api = create_api(
            admin_routes(lambda: self.services),
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )

    def send(self, key: str, secret: str) -> tuple[int, dict[str, Any], dict[str, list[str]]]:
        event = load_event("send/send-welcome")
        with_headers(event, X_Api_Key=key, X_Api_Secret=secret)
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"]), response["multiValueHeaders"]

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        event = request_event(method, path, body=body, Authorization=f"Bearer {ADMIN_TOKEN}")
        response = self.admin_api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def create_client(self, **fields: Any) -> dict[str, Any]:
        # Names are unique: a test may create several clients.
        name = f"acme-{uuid.uuid4().hex[:8]}"
        status, body = self.admin("POST", "/admin/clients", {"name": name, **fields})
        assert status == 201, body
        return body


@pytest.fixture
def instance(database: Database, redis_url: str) -> Instance:
    return Instance(str(database.engine.url.render_as_string(hide_password=False)), redis_url)


def _rows(database: Database, client_id: str) -> int:
    with database.engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM messages WHERE client_id = :id"), {"id": client_id}
            ).scalar_one()
        )


class TestRedisScripts:
    def test_the_bucket_gives_exactly_its_capacity_to_concurrent_takers(
        self, redis_url: str
    ) -> None:
        limiter = RedisRateLimiter(RedisStore(redis_url))
        bucket = Bucket(f"client:{uuid.uuid4()}", 25)
        with ThreadPoolExecutor(max_workers=16) as pool:
            decisions = list(pool.map(lambda _: limiter.take(bucket), range(60)))
        assert sum(d.allowed for d in decisions) == 25
        refused = [d for d in decisions if not d.allowed]
        assert all(d.remaining == 0 and d.retry_after_seconds >= 1 for d in refused)

    def test_a_full_global_bucket_refuses_without_taking_the_clients_token(
        self, redis_url: str
    ) -> None:
        limiter = RedisRateLimiter(RedisStore(redis_url))
        shared = Bucket("global", 2, "global")
        first, second = Bucket("client:a", 10), Bucket("client:b", 10)
        assert limiter.take(first, shared=shared).allowed
        assert limiter.take(second, shared=shared).allowed
        refused = limiter.take(first, shared=shared)
        assert not refused.allowed
        # the answer is the tightest bucket's: the global one that refused
        assert (refused.level, refused.limit, refused.remaining) == ("global", 2, 0)
        # and the refusal cost the client nothing: 10 - 1 earlier - 1 now
        assert limiter.take(first).remaining == 8

    def test_the_quota_counter_accepts_exactly_the_limit_under_concurrency(
        self, redis_url: str
    ) -> None:
        counter = RedisQuotaCounter(RedisStore(redis_url))
        client_id, period = uuid.uuid4(), QuotaPeriod.containing(datetime.now(UTC))
        counter.seed(client_id, period, 0)
        with ThreadPoolExecutor(max_workers=16) as pool:
            takes = list(pool.map(lambda _: counter.take(client_id, period, 15), range(50)))
        assert sum(1 for t in takes if t is not None and t.accepted) == 15
        assert counter.read(client_id, period) == 15
        ttl = redis.Redis.from_url(redis_url).ttl(f"mailroom:quota:{client_id}:{period.label}")
        assert ttl > (period.end - datetime.now(UTC)).total_seconds()


def test_two_processes_share_one_bucket(instance: Instance, database: Database) -> None:
    # GIVEN a client allowed 6 requests per minute (a token comes back every 10 s)
    client = instance.create_client(rate_limit=6)
    # WHEN two separate processes send 6 requests each, starting together
    statuses = send_in_processes(
        Burst(
            database_url=instance.settings.database_url,
            redis_url=instance.settings.redis_url,
            api_key=client["api_key"],
            api_secret=client["api_secret"],
            requests=6,
        ),
        processes=2,
    )
    # THEN between them exactly 6 were accepted and 6 rate-limited
    assert Counter(statuses) == {(202, None): 6, (429, "rate_limited"): 6}
    assert _rows(database, client["id"]) == 6


def test_concurrent_sends_at_the_quota_edge_accept_exactly_the_remainder(
    instance: Instance, database: Database
) -> None:
    # GIVEN a client with a quota of 10 that has used 5
    client = instance.create_client(quota_limit=10, rate_limit=1000)
    for _ in range(5):
        assert instance.send(client["api_key"], client["api_secret"])[0] == 202
    # WHEN 4 processes send 4 each at the same moment
    statuses = send_in_processes(
        Burst(
            database_url=instance.settings.database_url,
            redis_url=instance.settings.redis_url,
            api_key=client["api_key"],
            api_secret=client["api_secret"],
            requests=4,
        ),
        processes=4,
    )
    # THEN exactly 5 of the 16 were accepted, and the rest refused for the quota
    assert Counter(statuses) == {(202, None): 5, (429, "quota_exceeded"): 11}
    assert _rows(database, client["id"]) == 10
    # AND the counter agrees with the messages table
    period = QuotaPeriod.containing(datetime.now(UTC))
    result = quotas.reconcile_quota(
        instance.services.quota, instance.services.uow, uuid.UUID(client["id"]), period
    )
    assert (result.counter_before, result.counted) == (10, 10)


def test_redis_down_is_503_and_no_row_cold_or_warm(database: Database, redis_url: str) -> None:
    # GIVEN an instance whose Redis connection runs through a proxy we can cut,
    # and that has already served the client (its verification is cached)
    url = str(database.engine.url.render_as_string(hide_password=False))
    target = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    with TcpProxy(str(target.get("host", "127.0.0.1")), int(target.get("port", 6379))) as proxy:
        database_number = int(target.get("db", 0))
        warm = Instance(url, f"redis://127.0.0.1:{proxy.port}/{database_number}")
        client = warm.create_client()
        assert warm.send(client["api_key"], client["api_secret"])[0] == 202
        assert len(warm.services.authenticator.cache) == 1
        cold = Instance(url, f"redis://127.0.0.1:{free_port()}/0")
        # WHEN Redis becomes unreachable
        proxy.cut()
        # THEN the warm and a cold instance both answer 503 and write nothing: never unlimited
        for instance in (warm, cold):
            status, body, _ = instance.send(client["api_key"], client["api_secret"])
            assert (status, body["error"]["code"]) == (503, "service_unavailable")
    assert _rows(database, client["id"]) == 1
    assert len(warm.queue.sent) == 1
    assert cold.queue.sent == []


def test_suspension_reaches_every_warm_instance_on_its_next_request(
    database: Database, redis_url: str
) -> None:
    # GIVEN two API instances that have both cached the client's verification
    url = str(database.engine.url.render_as_string(hide_password=False))
    first, second, admin = (Instance(url, redis_url) for _ in range(3))
    client = admin.create_client()
    for instance in (first, second):
        assert instance.send(client["api_key"], client["api_secret"])[0] == 202
        assert len(instance.services.authenticator.cache) == 1
    # WHEN the admin function suspends it
    assert admin.admin("POST", f"/admin/clients/{client['id']}/suspend")[0] == 200
    # THEN the next request on each instance is refused, within its cache TTL
    for instance in (first, second):
        status, body, _ = instance.send(client["api_key"], client["api_secret"])
        assert (status, body["error"]["code"]) == (403, "client_suspended")
    # AND reactivation, too, applies at once
    assert admin.admin("POST", f"/admin/clients/{client['id']}/reactivate")[0] == 200
    assert first.send(client["api_key"], client["api_secret"])[0] == 202


def test_rotation_with_and_without_grace_on_real_argon2(instance: Instance) -> None:
    client = instance.create_client()
    key = client["api_key"]
    _, kept = instance.admin("POST", f"/admin/clients/{key}/rotate-secret", {"grace_seconds": 600})
    assert instance.send(key, client["api_secret"])[0] == 202
    assert instance.send(key, kept["api_secret"])[0] == 202
    _, ended = instance.admin("POST", f"/admin/clients/{key}/rotate-secret", {"grace_seconds": 0})
    for old in (client["api_secret"], kept["api_secret"]):
        status, body, _ = instance.send(key, old)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert instance.send(key, ended["api_secret"])[0] == 202


def test_reconciliation_against_the_real_messages_table(
    instance: Instance, database: Database
) -> None:
    # GIVEN 3 accepted messages, one more whose enqueue failed, and a counter that drifted
    client = instance.create_client()
    for _ in range(3):
        assert instance.send(client["api_key"], client["api_secret"])[0] == 202
    instance.queue.fail = True
    assert instance.send(client["api_key"], client["api_secret"])[0] == 503
    assert _rows(database, client["id"]) == 4
    period = QuotaPeriod.containing(datetime.now(UTC))
    client_id = uuid.UUID(client["id"])
    counter = instance.services.quota
    assert counter.read(client_id, period) == 3  # the failed enqueue gave its charge back
    counter.replace(client_id, period, expected=3, used=42)
    # WHEN the admin API reconciles it
    status, body = instance.admin("POST", "/admin/quota/reconcile", {"client": client["api_key"]})
    # THEN the counter reads what the table says
    assert status == 200
    [result] = body["results"]
    assert (result["counter_before"], result["counted"], result["counter_after"]) == (42, 3, 3)
    assert counter.read(client_id, period) == 3


def test_a_lost_counter_restarts_from_the_table(instance: Instance) -> None:
    client = instance.create_client(quota_limit=3)
    for _ in range(2):
        assert instance.send(client["api_key"], client["api_secret"])[0] == 202
    redis.Redis.from_url(instance.settings.redis_url).flushdb()  # Redis lost everything
    statuses = [instance.send(client["api_key"], client["api_secret"])[0] for _ in range(2)]
    assert statuses == [202, 429]


def test_last_used_at_is_recorded(instance: Instance, database: Database) -> None:
    client = instance.create_client()
    instance.send(client["api_key"], client["api_secret"])
    _, shown = instance.admin("GET", f"/admin/clients/{client['id']}")
    assert shown["last_used_at"] is not None
    assert shown["usage"]["used"] == 1


def test_the_audit_log_is_append_only(instance: Instance, database: Database) -> None:
    client = instance.create_client()
    instance.admin("POST", f"/admin/clients/{client['id']}/suspend")
    with database.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT action, actor, source_ip, before->>'status', after->>'status' "
                "FROM admin_audit_log WHERE target_id = :id ORDER BY id"
            ),
            {"id": client["id"]},
        ).all()
    actor = f"admin:{hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()[:12]}"
    source_ip = "203.0.113.7"  # the canonical event's caller
    assert [tuple(row) for row in rows] == [
        ("client.create", actor, source_ip, None, "active"),
        ("client.suspend", actor, source_ip, "active", "suspended"),
    ]
    for statement in ("UPDATE admin_audit_log SET actor = 'x'", "DELETE FROM admin_audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), database.engine.begin() as connection:
            connection.execute(text(statement))


def test_concurrent_admin_changes_do_not_lose_each_other(
    instance: Instance, database: Database
) -> None:
    # GIVEN one client, and two admins changing different fields at the same time
    client = instance.create_client()
    services = instance.services
    start = threading.Barrier(2)

    def change(changes: clients.ClientChanges) -> None:
        start.wait(timeout=10)
        clients.update_client(
            services.uow(),
            services.credential_versions,
            client["id"],
            changes,
            known_providers=("smtp",),
            actor=ADMIN,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(
            pool.map(
                change,
                [clients.ClientChanges(rate_limit=7), clients.ClientChanges(quota_limit=9)],
            )
        )
    # THEN both changes are kept (the row is locked while each is applied)
    shown = clients.find_client(services.uow(), client["id"])
    assert (shown.rate_limit, shown.quota_limit) == (7, 9)


def test_a_name_is_taken_once_however_many_admins_race_for_it(
    instance: Instance, database: Database
) -> None:
    # GIVEN eight admins creating "Acme" in different cases at the same moment
    start = threading.Barrier(8)

    def create(index: int) -> str:
        start.wait()
        name = ["Acme", "ACME", "acme", "aCME"][index % 4]
        try:
            clients.register_client(
                instance.services.uow(), instance.services.hasher, name=name, actor=ADMIN
            )
        except ClientNameTaken as refused:
            return refused.code
        return "created"

    # WHEN they all insert
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = Counter(pool.map(create, range(8)))
    # THEN the unique index let exactly one through
    assert outcomes == {"created": 1, "client_name_taken": 7}
    with database.engine.connect() as connection:
        names = connection.execute(text("SELECT name, lower(name) FROM clients")).all()
        audited = connection.execute(
            text("SELECT count(*) FROM admin_audit_log WHERE action = 'client.create'")
        ).scalar_one()
    assert [lowered for _, lowered in names] == ["acme"]
    assert audited == 1
    # AND renaming another client to that name over the admin API is 409 too
    other = instance.create_client()
    status, body = instance.admin("PATCH", f"/admin/clients/{other['id']}", {"name": "ACME "})
    assert (status, body["error"]["code"]) == (409, "client_name_taken")
    status, body = instance.admin("POST", "/admin/clients", {"name": "acme"})
    assert (status, body["error"]["code"]) == (409, "client_name_taken")
