"""Scoped API keys, Bearer tokens, IP allowlists and tiered limits on real PostgreSQL and Redis."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.api_keys import encode_token
from mailroom.domain.tenancy import Scope
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.api_keys import api_key_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.client_suppressions import client_suppression_routes
from mailroom.entrypoints.client_templates import client_template_routes
from mailroom.entrypoints.smtp_configs import smtp_config_routes
from tests.events import FakeLambdaContext, load_event, request_event, with_body, with_headers
from tests.fakes import RecordingQueue, ScriptedProvider
from tests.integration.api_processes import Caller, WarmProcess

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-with-enough-entropy"
SEND_BODY = load_event("send/send-welcome")["body"]

Answer = tuple[int, dict[str, Any], dict[str, list[str]]]


class Stack:
    """One API instance with the send, status and key routes, and the admin API."""

    def __init__(self, database_url: str, redis_url: str, **settings: Any) -> None:
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            **settings,
        )
        self.services: Services = bootstrap(
            self.settings, queue=RecordingQueue(), providers={"smtp": ScriptedProvider()}
        )
        self.api = create_api(
            [
                send_routes(lambda: self.services),
                status_routes(lambda: self.services),
                api_key_routes(lambda: self.services),
                client_template_routes(lambda: self.services),
                client_suppression_routes(lambda: self.services),
                smtp_config_routes(lambda: self.services),
            ],
            max_request_bytes=lambda: self.settings.max_request_bytes,
            client_gate=ClientGate(lambda: self.services),
        )
        self.admin_api = create_api(
            admin_routes(lambda: self.services),
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        key: dict[str, Any] | None = None,
        bearer: str | None = None,
        body: Any = None,
        source_ip: str = "198.51.100.20",
        forwarded_for: str | None = None,
    ) -> Answer:
        """A /v1 request with a key's header pair (``key``) or a Bearer token."""
        event = load_event("status/health")
        event["httpMethod"] = method
        event["path"] = event["resource"] = path
        event["requestContext"]["identity"]["sourceIp"] = source_ip
        if key is not None:
            with_headers(event, X_Api_Key=key["key"], X_Api_Secret=key["secret"])
        if bearer is not None:
            with_headers(event, Authorization=f"Bearer {bearer}")
        if forwarded_for is not None:
            with_headers(event, X_Forwarded_For=forwarded_for)
        if body is not None:
            with_body(event, body)
            with_headers(event, Content_Type="application/json")
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"]), response["multiValueHeaders"]

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        event = request_event(method, path, body=body, Authorization=f"Bearer {ADMIN_TOKEN}")
        response = self.admin_api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def client(self, **fields: Any) -> dict[str, Any]:
        """A new client; its first key (scope admin) as ``key``/``secret`` too."""
        status, body = self.admin(
            "POST", "/admin/clients", {"name": f"acme-{uuid.uuid4().hex[:8]}", **fields}
        )
        assert status == 201, body
        return {**body, "key": body["api_key"], "secret": body["api_secret"]}

    def key(self, client: dict[str, Any], **spec: Any) -> dict[str, Any]:
        body = {"name": "a key", "scopes": ["email:send"], **spec}
        status, created = self.admin("POST", f"/admin/clients/{client['id']}/api-keys", body)
        assert status == 201, created
        return created


@pytest.fixture
def stack(database: Database, redis_url: str) -> Stack:
    return Stack(str(database.engine.url.render_as_string(hide_password=False)), redis_url)


def _count(database: Database, sql: str) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(text(sql)).scalar_one())


# (method, path, body, the scope the route needs, the status it answers when allowed)
ROUTE_CLASSES = [
    ("POST", "/v1/send", SEND_BODY, Scope.EMAIL_SEND, 202),
    ("GET", "/v1/messages", None, Scope.EMAIL_READ, 200),
    ("GET", "/v1/api-keys", None, Scope.ADMIN, 200),
    ("GET", "/v1/templates", None, Scope.TEMPLATE_MANAGE, 200),
    ("GET", "/v1/suppressions", None, Scope.SUPPRESSION_MANAGE, 200),
    ("GET", "/v1/smtp-configs", None, Scope.SMTP_MANAGE, 200),
]


def test_a_key_per_scope_passes_its_routes_and_gets_403_elsewhere_both_ways(
    stack: Stack,
) -> None:
    # GIVEN a client with one key per scope
    client = stack.client(rate_limit=10_000)
    keys = {scope: stack.key(client, name=scope.value, scopes=[scope.value]) for scope in Scope}
    for scope, key in keys.items():
        for method, path, body, needed, allowed_status in ROUTE_CLASSES:
            # WHEN the key calls the route with its header pair, then with its Bearer token
            by_headers = stack.call(method, path, key=key, body=body)
            by_token = stack.call(method, path, bearer=key["token"], body=body)
            for status, answer, _ in (by_headers, by_token):
                # THEN the route's own scope and admin pass, every other scope is 403
                if scope in (needed, Scope.ADMIN):
                    assert status == allowed_status, (scope, path, answer)
                else:
                    assert status == 403, (scope, path, answer)
                    assert answer["error"]["code"] == "insufficient_scope"
                    assert answer["error"]["details"] == [{"required_scope": needed.value}]


def test_ip_allowlists_ipv4_ipv6_and_an_ipv4_mapped_caller(
    stack: Stack, database: Database
) -> None:
    # GIVEN a key usable only from 203.0.113.0/24 and 2001:db8::/32
    client = stack.client()
    key = stack.key(client, scopes=["email:read"], ip_allowlist=["203.0.113.0/24", "2001:db8::/32"])
    for source, allowed in [
        ("203.0.113.7", True),
        ("2001:db8::5", True),
        ("::ffff:203.0.113.9", True),  # a dual-stack socket's view of an IPv4 caller
        ("198.51.100.1", False),
        ("2001:db9::1", False),
        ("::ffff:198.51.100.1", False),
    ]:
        # WHEN it is used from each address
        status, body, _ = stack.call("GET", "/v1/messages", key=key, source_ip=source)
        # THEN only the listed networks pass; the rest are 403 ip_not_allowed
        if allowed:
            assert status == 200, (source, body)
        else:
            assert (status, body["error"]["code"]) == (403, "ip_not_allowed"), source
    # AND X-Forwarded-For cannot talk its way in
    status, _, _ = stack.call(
        "GET", "/v1/messages", key=key, source_ip="198.51.100.1", forwarded_for="203.0.113.7"
    )
    assert status == 403
    # AND the refusals are audited once per key and reason per minute, never with a secret
    rows = _count(
        database,
        "SELECT count(*) FROM admin_audit_log WHERE action = 'api_key.refused'"
        f" AND target_id = '{key['id']}'",
    )
    assert rows == 1
    with database.engine.connect() as connection:
        actor, source_ip, after = connection.execute(
            text("SELECT actor, source_ip, after FROM admin_audit_log WHERE target_id = :k"),
            {"k": key["id"]},
        ).all()[-1]
    assert (actor, source_ip, after["reason"]) == (
        f"key:{key['id']}",
        "198.51.100.1",
        "ip_not_allowed",
    )
    assert key["secret"] not in json.dumps(after)


def test_revocation_is_seen_by_another_process_at_its_next_request(
    stack: Stack, database: Database
) -> None:
    # GIVEN another API process that has verified and cached a key (Bearer form)
    client = stack.client()
    key = stack.key(client, scopes=["email:read"])
    caller = Caller(
        database_url=stack.settings.database_url,
        redis_url=stack.settings.redis_url,
        headers={"Authorization": f"Bearer {key['token']}"},
    )
    with WarmProcess(caller) as other:
        assert other.first_answer() == ((200, None), 1)
        # WHEN the client revokes the key through its own admin key
        status, revoked, _ = stack.call("DELETE", f"/v1/api-keys/{key['id']}", key=client)
        assert (status, revoked["status"]) == (200, "revoked")
        # THEN the other process refuses it at its very next request
        assert other.next_request() == (401, "api_key_revoked")
    # AND the revocation is audited with the key id, the acting key and the address
    with database.engine.connect() as connection:
        actor, source_ip = connection.execute(
            text(
                "SELECT actor, source_ip FROM admin_audit_log"
                " WHERE action = 'api_key.revoke' AND target_id = :k"
            ),
            {"k": key["id"]},
        ).one()
    assert (actor, source_ip) == (f"key:{client['key']}", "198.51.100.20")


def test_self_management_creates_lists_rotates_and_revokes(
    stack: Stack, database: Database
) -> None:
    client = stack.client()
    # WHEN the client creates a key for itself
    status, created, headers = stack.call(
        "POST",
        "/v1/api-keys",
        key=client,
        body={"name": "ci", "scopes": ["email:send", "email:read"], "mode": "test"},
    )
    # THEN it gets the key, secret and token once, and the key works both ways
    assert status == 201, created
    assert created["id"] == created["key"]
    assert created["id"].startswith("mr_test_")
    assert created["token"] == encode_token(created["key"], created["secret"])
    assert headers["Cache-Control"] == ["no-store"]
    assert stack.call("GET", "/v1/messages", key=created)[0] == 200
    assert stack.call("GET", "/v1/messages", bearer=created["token"])[0] == 200
    # AND the listing shows it without any secret
    status, listed, _ = stack.call("GET", "/v1/api-keys", key=client)
    assert status == 200
    assert {k["id"] for k in listed["keys"]} == {client["key"], created["id"]}
    assert created["secret"] not in json.dumps(listed)
    # WHEN it rotates the key with a grace period
    status, rotated, _ = stack.call(
        "POST", f"/v1/api-keys/{created['id']}/rotate", key=client, body={"grace_seconds": 600}
    )
    assert status == 200
    # THEN old and new secrets both work until the grace ends
    assert stack.call("GET", "/v1/messages", key=created)[0] == 200
    assert stack.call("GET", "/v1/messages", bearer=rotated["token"])[0] == 200
    # AND another client cannot touch it: it does not exist for them
    other = stack.client()
    status, body, _ = stack.call("DELETE", f"/v1/api-keys/{created['id']}", key=other)
    assert (status, body["error"]["code"]) == (404, "api_key_not_found")
    # AND every change is in the audit log under the key's id, never with a secret
    with database.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT action, actor, after FROM admin_audit_log WHERE target_id = :k ORDER BY id"
            ),
            {"k": created["id"]},
        ).all()
    assert [(r.action, r.actor) for r in rows] == [
        ("api_key.create", f"key:{client['key']}"),
        ("api_key.rotate", f"key:{client['key']}"),
    ]
    dumped = json.dumps([r.after for r in rows])
    assert created["secret"] not in dumped
    assert rotated["secret"] not in dumped


def test_bad_credentials_and_bad_keys_are_clear_4xx_and_write_nothing(
    stack: Stack, database: Database, redis_url: str
) -> None:
    client = stack.client()
    key = stack.key(client, scopes=["email:read"])
    other = stack.key(client, scopes=["email:read"])
    keys_before = _count(database, "SELECT count(*) FROM api_keys")
    audit_before = _count(database, "SELECT count(*) FROM admin_audit_log")
    commands = redis.Redis.from_url(redis_url)
    token = key["token"]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    # Malformed tokens and wrong checksums: refused before Redis, the database or argon2
    before = commands.info("stats")["total_commands_processed"]
    for bad in [flipped, token[:-2], "mr_live_nothing", token + "x", "x" * 5000]:
        status, body, _ = stack.call("GET", "/v1/messages", bearer=bad)
        assert (status, body["error"]["code"]) == (401, "invalid_token"), bad
    # (the INFO call itself is one command)
    assert commands.info("stats")["total_commands_processed"] == before + 1
    # Unknown key id, and one key's secret with another key: one answer, no hint
    unknown = {"key": "mr_live_" + "0" * 24, "secret": key["secret"]}
    crossed = {"key": other["id"], "secret": key["secret"]}
    for credentials in (unknown, crossed):
        status, body, _ = stack.call("GET", "/v1/messages", key=credentials)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
    # Key specs that cannot be: each its own code
    specs: list[tuple[dict[str, Any], str]] = [
        ({"scopes": ["email:send", "email:everything"]}, "unknown_scope"),
        ({"scopes": []}, "validation_error"),
        ({"ip_allowlist": ["10.0.0.0/33"]}, "invalid_cidr"),
        ({"ip_allowlist": ["10.0.0.7/8"]}, "invalid_cidr"),
        ({"ip_allowlist": ["not-an-ip"]}, "invalid_cidr"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "validation_error"),
        ({"mode": "staging"}, "validation_error"),
        ({"rate_limit": 0}, "validation_error"),
    ]
    for spec, code in specs:
        body = {"name": "bad", "scopes": ["email:read"], **spec}
        status, answer, _ = stack.call("POST", "/v1/api-keys", key=client, body=body)
        assert (status, answer["error"]["code"]) == (422, code), spec
    # THEN nothing was written
    assert _count(database, "SELECT count(*) FROM api_keys") == keys_before
    assert _count(database, "SELECT count(*) FROM admin_audit_log") == audit_before


def test_an_expired_key_is_refused_with_its_own_code(stack: Stack) -> None:
    client = stack.client()
    soon = datetime.now(UTC) + timedelta(seconds=2)
    key = stack.key(client, scopes=["email:read"], expires_at=soon.isoformat())
    assert stack.call("GET", "/v1/messages", key=key)[0] == 200  # cached from here on
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.2)
    status, body, _ = stack.call("GET", "/v1/messages", key=key)
    assert (status, body["error"]["code"]) == (401, "api_key_expired")


def test_tiered_buckets_in_one_round_trip_with_the_tightest_headers(
    database: Database, redis_url: str
) -> None:
    stack = Stack(
        str(database.engine.url.render_as_string(hide_password=False)),
        redis_url,
        global_rate_limit_per_minute=10_000,
    )
    # GIVEN a client allowed 10 per minute and a key of its allowed 3
    client = stack.client(rate_limit=10)
    key = stack.key(client, scopes=["email:read"], rate_limit=3)
    assert stack.call("GET", "/v1/messages", key=key)[0] == 200  # warm: verified and cached
    stats = redis.Redis.from_url(redis_url)

    def evals() -> int:
        commandstats = stats.info("commandstats")
        return sum(
            int(commandstats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in ("eval", "evalsha")
        )

    before = evals()
    # WHEN it makes more requests
    answers = [stack.call("GET", "/v1/messages", key=key) for _ in range(3)]
    # THEN each took global, client and key buckets in one script call
    assert evals() - before == 3
    # AND the headers are the key's (the tightest), down to a 429 naming the tier
    assert [(s, h["X-RateLimit-Limit"], h["X-RateLimit-Remaining"]) for s, _, h in answers] == [
        (200, ["3"], ["1"]),
        (200, ["3"], ["0"]),
        (429, ["3"], ["0"]),
    ]
    refused = answers[-1][1]["error"]
    assert (refused["code"], refused["details"][0]["level"]) == ("rate_limited", "key")
    # AND a key with a looser limit than its client shows the client's numbers
    loose = stack.key(client, scopes=["email:read"], rate_limit=500)
    status, _, headers = stack.call("GET", "/v1/messages", key=loose)
    assert (status, headers["X-RateLimit-Limit"]) == (200, ["10"])


def test_a_daily_limit_refuses_with_429_and_its_numbers(stack: Stack) -> None:
    # GIVEN a client allowed 2 messages a day
    client = stack.client(daily_limit=2)
    assert client["daily_limit"] == 2
    for _ in range(2):
        assert stack.call("POST", "/v1/send", key=client, body=SEND_BODY)[0] == 202
    # WHEN it sends a third
    status, body, headers = stack.call("POST", "/v1/send", key=client, body=SEND_BODY)
    # THEN 429 daily_limit_exceeded, with the day, the limit and when it resets
    assert (status, body["error"]["code"]) == (429, "daily_limit_exceeded")
    [detail] = body["error"]["details"]
    today = datetime.now(UTC).date()
    assert detail["daily_limit"] == 2
    assert detail["used"] == 2
    assert detail["period"] == today.isoformat()
    assert detail["resets_at"] == f"{today + timedelta(days=1)}T00:00:00Z"
    assert int(headers["Retry-After"][0]) >= 1
    # AND lifting it (PATCH null) lets the next one through at once
    status, updated = stack.admin("PATCH", f"/admin/clients/{client['id']}", {"daily_limit": None})
    assert (status, updated["daily_limit"]) == (200, None)
    assert stack.call("POST", "/v1/send", key=client, body=SEND_BODY)[0] == 202


def test_migrated_key_pairs_keep_working_as_admin_keys(stack: Stack, database: Database) -> None:
    # GIVEN a client registered the way every client was (one key pair)
    client = stack.client()
    # THEN its pair is one api_keys row with scope admin, mode live
    with database.engine.connect() as connection:
        scopes, mode = connection.execute(
            text("SELECT scopes, mode FROM api_keys WHERE id = :k"), {"k": client["key"]}
        ).one()
    assert (scopes, mode) == (["admin"], "live")
    # AND the operators' key routes and the client's own see the same keys
    status, listed = stack.admin("GET", f"/admin/clients/{client['key']}/api-keys")
    assert status == 200
    assert [k["id"] for k in listed["keys"]] == [client["key"]]
