"""The tenancy layer over HTTP, on fakes: auth failures, rate limits, quotas, the admin API."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.client_gate import ClientGate
from tests.events import FakeLambdaContext, load_event, request_event, with_body, with_headers
from tests.fakes import (
    FakeCredentialVersions,
    FakeQuotaCounter,
    FakeRateLimiter,
    FakeUnitOfWork,
    PlainHasher,
    RecordingQueue,
    ScriptedProvider,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "an-admin-token-of-forty-three-characters-xx"
SAMPLE_PROPS = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")

Answer = tuple[int, dict[str, Any], dict[str, str]]


class Stack:
    """One client API and one admin API over the same fakes, wired as the functions are."""

    def __init__(self, *, redis_down: bool = False) -> None:
        self.uow = FakeUnitOfWork()
        self.queue = RecordingQueue()
        self.quota = FakeQuotaCounter()
        self.services: Services = bootstrap(
            Settings(
                templates_dir=TEMPLATES,
                admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            ),
            uow=lambda: self.uow,
            hasher=PlainHasher(),
            queue=self.queue,
            providers={"smtp": ScriptedProvider()},
            rate_limiter=FakeRateLimiter(down=redis_down),
            quota=self.quota,
            credential_versions=FakeCredentialVersions(),
            health_probes={},
        )
        self.api = create_api(
            [send_routes(lambda: self.services), status_routes(lambda: self.services)],
            max_request_bytes=lambda: 65536,
            client_gate=ClientGate(lambda: self.services),
        )
        self.admin_api = create_api(
            admin_routes(lambda: self.services), max_request_bytes=lambda: 65536
        )

    @staticmethod
    def _call(app: Any, event: dict[str, Any]) -> Answer:
        response = app.resolve(event, FakeLambdaContext())
        body = json.loads(response["body"]) if response.get("body") else {}
        headers = {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()}
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers[name.lower()] = ", ".join(values)
        return response["statusCode"], body, headers

    def admin(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        **headers: str | None,
    ) -> Answer:
        event = request_event(
            method, path, query=query, body=body, Authorization=f"Bearer {ADMIN_TOKEN}"
        )
        with_headers(event, **headers)
        return self._call(self.admin_api, event)

    def create_client(self, **fields: Any) -> dict[str, Any]:
        status, body, _ = self.admin("POST", "/admin/clients", {"name": "acme", **fields})
        assert status == 201, body
        return body

    def send(self, key: str | None, secret: str | None, body: Any = None) -> Answer:
        event = load_event("send/send-welcome")
        with_headers(event, X_Api_Key=key, X_Api_Secret=secret)
        if body is not None:
            with_body(event, body)
        return self._call(self.api, event)

    def get_message(self, key: str, secret: str, message_id: str) -> Answer:
        event = load_event("status/get-message")
        event["path"] = f"/v1/messages/{message_id}"
        event["pathParameters"] = {"message_id": message_id}
        with_headers(event, X_Api_Key=key, X_Api_Secret=secret)
        return self._call(self.api, event)


@pytest.fixture
def stack() -> Stack:
    return Stack()


def _credentials(client: dict[str, Any]) -> tuple[str, str]:
    return client["api_key"], client["api_secret"]


class TestAuthFailures:
    def test_missing_headers_are_401(self, stack: Stack) -> None:
        client = stack.create_client()
        for key, secret in ((None, None), (client["api_key"], None), (None, "x" * 43)):
            status, body, _ = stack.send(key, secret)
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert stack.uow.messages.rows == {}

    def test_unknown_key_and_wrong_secret_get_the_very_same_answer(self, stack: Stack) -> None:
        client = stack.create_client()
        unknown = stack.send("mr_live_" + "0" * 24, client["api_secret"])
        wrong = stack.send(client["api_key"], "y" * 43)
        malformed = stack.send(client["api_key"], "wrong")
        assert unknown[0] == wrong[0] == malformed[0] == 401
        assert unknown[1] == wrong[1] == malformed[1]
        assert unknown[1]["error"]["code"] == "unauthorized"
        assert stack.uow.messages.rows == {}

    def test_a_suspended_client_is_403_at_once(self, stack: Stack) -> None:
        client = stack.create_client()
        assert stack.send(*_credentials(client))[0] == 202  # warm: verification cached
        stack.admin("POST", f"/admin/clients/{client['id']}/suspend")
        status, body, _ = stack.send(*_credentials(client))
        assert (status, body["error"]["code"]) == (403, "client_suspended")
        assert len(stack.uow.messages.rows) == 1

    def test_a_rotated_secret_works_inside_the_grace_period(self, stack: Stack) -> None:
        client = stack.create_client()
        _, rotated, _ = stack.admin(
            "POST", f"/admin/clients/{client['api_key']}/rotate-secret", {"grace_seconds": 3600}
        )
        assert rotated["previous_secret_expires_at"] is not None
        assert stack.send(*_credentials(client))[0] == 202
        assert stack.send(client["api_key"], rotated["api_secret"])[0] == 202

    def test_a_rotated_secret_is_refused_outside_the_grace_period(self, stack: Stack) -> None:
        client = stack.create_client()
        _, rotated, _ = stack.admin(
            "POST", f"/admin/clients/{client['api_key']}/rotate-secret", {"grace_seconds": 0}
        )
        assert rotated["previous_secret_expires_at"] is None
        status, body, _ = stack.send(*_credentials(client))
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert stack.send(client["api_key"], rotated["api_secret"])[0] == 202

    def test_a_client_key_pair_is_refused_on_admin_routes(self, stack: Stack) -> None:
        client = stack.create_client()
        for method, path in (("GET", "/admin/clients"), ("GET", "/admin/whoami")):
            status, body, _ = stack.admin(
                method,
                path,
                Authorization=None,
                X_Api_Key=client["api_key"],
                X_Api_Secret=client["api_secret"],
            )
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        # not even as a bearer token
        status, _, _ = stack.admin(
            "GET", "/admin/clients", Authorization=f"Bearer {client['api_secret']}"
        )
        assert status == 401

    def test_the_admin_token_is_refused_on_client_routes(self, stack: Stack) -> None:
        event = load_event("send/send-welcome")
        with_headers(event, Authorization=f"Bearer {ADMIN_TOKEN}")
        status, body, _ = stack._call(stack.api, event)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert stack.uow.messages.rows == {}

    def test_who_is_calling_is_checked_before_what_they_sent(self, stack: Stack) -> None:
        status, body, _ = stack.send("mr_live_" + "0" * 24, "x" * 43, "not json at all")
        assert (status, body["error"]["code"]) == (401, "unauthorized")


class TestRateLimit:
    def test_a_burst_gets_exactly_the_limit_then_429_with_headers(self, stack: Stack) -> None:
        # GIVEN a client allowed 3 requests per minute
        client = stack.create_client(rate_limit=3)
        # WHEN it sends 5 at once
        answers = [stack.send(*_credentials(client)) for _ in range(5)]
        # THEN 3 are accepted, with the remaining count going down
        assert [status for status, _, _ in answers] == [202, 202, 202, 429, 429]
        assert [h["x-ratelimit-remaining"] for _, _, h in answers] == ["2", "1", "0", "0", "0"]
        for _, _, headers in answers:
            assert headers["x-ratelimit-limit"] == "3"
            assert int(headers["x-ratelimit-reset"]) > 0
        # AND the refusals say rate_limited, and when to come back
        for _, body, headers in answers[3:]:
            assert body["error"]["code"] == "rate_limited"
            assert int(headers["retry-after"]) >= 1
        assert len(stack.uow.messages.rows) == 3

    def test_every_client_api_answer_carries_the_headers(self, stack: Stack) -> None:
        client = stack.create_client()
        key, secret = _credentials(client)
        accepted = stack.send(key, secret)
        invalid = stack.send(key, secret, {"template": "welcome", "to": "not-an-address"})
        malformed = stack.send(key, secret, "{")
        found = stack.get_message(key, secret, accepted[1]["id"])
        missing = stack.get_message(key, secret, "00000000-0000-4000-8000-000000000000")
        statuses = [answer[0] for answer in (accepted, invalid, malformed, found, missing)]
        assert statuses == [202, 422, 400, 200, 404]
        for _, _, headers in (accepted, invalid, malformed, found, missing):
            assert all(name in headers for name in RATE_HEADERS), headers

    def test_redis_down_is_503_and_writes_nothing(self) -> None:
        stack = Stack(redis_down=True)
        client = stack.create_client()
        status, body, _ = stack.send(*_credentials(client))
        assert (status, body["error"]["code"]) == (503, "service_unavailable")
        assert stack.uow.messages.rows == {}
        assert stack.queue.sent == []


class TestQuota:
    def test_past_the_quota_is_429_with_the_reset_time_and_nothing_written(
        self, stack: Stack
    ) -> None:
        client = stack.create_client(quota_limit=2)
        answers = [stack.send(*_credentials(client)) for _ in range(3)]
        assert [a[0] for a in answers] == [202, 202, 429]
        _, body, headers = answers[2]
        assert body["error"]["code"] == "quota_exceeded"
        [detail] = body["error"]["details"]
        assert (detail["quota_limit"], detail["used"]) == (2, 2)
        assert detail["resets_at"].endswith("-01T00:00:00Z")
        assert int(headers["retry-after"]) > 0
        assert all(name in headers for name in RATE_HEADERS)
        assert len(stack.uow.messages.rows) == 2
        assert len(stack.queue.sent) == 2

    def test_an_invalid_request_does_not_use_quota(self, stack: Stack) -> None:
        client = stack.create_client(quota_limit=1)
        key, secret = _credentials(client)
        # refused inside the send service, after the body parsed: too many recipients
        too_many = {
            "template": "welcome",
            "to": "a@example.com",
            "cc": [f"c{n}@example.com" for n in range(60)],
            "props": SAMPLE_PROPS,
        }
        assert stack.send(key, secret, too_many)[0] == 422
        assert stack.send(key, secret)[0] == 202

    def test_an_enqueue_failure_gives_the_charge_back(self, stack: Stack) -> None:
        client = stack.create_client(quota_limit=1)
        stack.queue.fail = True
        assert stack.send(*_credentials(client))[1]["error"]["code"] == "enqueue_failed"
        stack.queue.fail = False
        assert stack.send(*_credentials(client))[0] == 202


class TestAdminApi:
    def test_create_answers_201_with_the_secret_once(self, stack: Stack) -> None:
        created = stack.create_client(rate_limit=30, quota_limit=500, provider_order=["smtp"])
        assert created["api_key"].startswith("mr_live_")
        assert len(created["api_secret"]) == 43
        assert (created["rate_limit"], created["quota_limit"], created["status"]) == (
            30,
            500,
            "active",
        )
        _, listed, _ = stack.admin("GET", "/admin/clients")
        _, shown, _ = stack.admin("GET", f"/admin/clients/{created['id']}")
        assert [c["id"] for c in listed["clients"]] == [created["id"]]
        assert "api_secret" not in json.dumps(listed)
        assert created["api_secret"] not in json.dumps(listed) + json.dumps(shown)
        assert shown["usage"]["limit"] == 500

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            ({"name": "x", "key_type": "staging"}, "validation_error"),
            ({"name": "x", "daily_limit": -1}, "validation_error"),
            ({"name": "x", "rate_limit": 0}, "validation_error"),
            ({"name": "x", "provider_order": ["nope"]}, "validation_error"),
            ({"name": ""}, "validation_error"),
            ({"name": "x", "ratelimit": 5}, "validation_error"),
        ],
    )
    def test_bad_creations_are_422(self, stack: Stack, body: dict[str, Any], code: str) -> None:
        status, answer, _ = stack.admin("POST", "/admin/clients", body)
        assert (status, answer["error"]["code"]) == (422, code)
        assert stack.uow.clients.rows == {}

    def test_update_applies_to_the_next_request(self, stack: Stack) -> None:
        client = stack.create_client(rate_limit=100)
        assert stack.send(*_credentials(client))[2]["x-ratelimit-limit"] == "100"
        status, updated, _ = stack.admin(
            "PATCH", f"/admin/clients/{client['api_key']}", {"rate_limit": 5, "name": "Acme"}
        )
        assert (status, updated["rate_limit"], updated["name"]) == (200, 5, "Acme")
        assert stack.send(*_credentials(client))[2]["x-ratelimit-limit"] == "5"

    def test_a_taken_name_is_409_on_create_and_rename_whatever_its_case(self, stack: Stack) -> None:
        # GIVEN a client named Acme and another named Globex
        acme = stack.create_client(name="Acme")
        globex = stack.create_client(name="Globex")
        audited = len(stack.uow.audit.entries)
        # WHEN a second "ACME" is created, or Globex is renamed to " acme "
        created = stack.admin("POST", "/admin/clients", {"name": "ACME"})
        renamed = stack.admin("PATCH", f"/admin/clients/{globex['id']}", {"name": " acme "})
        # THEN both are refused as a conflict, and nothing changed or was audited
        for status, body, _ in (created, renamed):
            assert (status, body["error"]["code"]) == (409, "client_name_taken")
            assert body["error"]["details"] == [
                {"field": "name", "message": "taken by another client"}
            ]
        assert sorted(c.name for c in stack.uow.clients.rows.values()) == ["Acme", "Globex"]
        assert len(stack.uow.audit.entries) == audited
        # AND a client may change the case of its own name
        status, view, _ = stack.admin("PATCH", f"/admin/clients/{acme['id']}", {"name": "ACME"})
        assert (status, view["name"]) == (200, "ACME")

    def test_reactivate_lets_the_client_in_again(self, stack: Stack) -> None:
        client = stack.create_client()
        stack.admin("POST", f"/admin/clients/{client['id']}/suspend")
        _, view, _ = stack.admin("POST", f"/admin/clients/{client['id']}/reactivate")
        assert view["status"] == "active"
        assert stack.send(*_credentials(client))[0] == 202

    def test_unknown_clients_are_404(self, stack: Stack) -> None:
        status, body, _ = stack.admin("POST", "/admin/clients/mr_live_nobody/suspend")
        assert (status, body["error"]["code"]) == (404, "client_not_found")

    def test_reconcile_and_audit(self, stack: Stack) -> None:
        client = stack.create_client()
        stack.send(*_credentials(client))
        stack.quota.counters = {key: 40 for key in stack.quota.counters}  # drifted
        status, result, _ = stack.admin("POST", "/admin/quota/reconcile", {"client": client["id"]})
        assert status == 200
        [row] = result["results"]
        assert (row["counter_before"], row["counted"], row["counter_after"]) == (40, 1, 1)
        _, audit, _ = stack.admin("GET", "/admin/audit", query={"target": client["id"]})
        assert [e["action"] for e in audit["entries"]] == ["client.create", "quota.reconcile"]
        assert all(e["actor"].startswith("admin:") for e in audit["entries"])


def test_secrets_never_reach_the_logs(
    stack: Stack, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN every log line captured, at debug level
    caplog.set_level(logging.DEBUG)
    # WHEN a client is created, fails to authenticate, is rotated, and used
    created = stack.create_client()
    stack.send(created["api_key"], created["api_secret"][:-1] + "A")
    stack.send("mr_live_" + "0" * 24, created["api_secret"])
    _, rotated, _ = stack.admin("POST", f"/admin/clients/{created['id']}/rotate-secret", {})
    stack.send(created["api_key"], rotated["api_secret"])
    stack.send(created["api_key"], created["api_secret"])
    # THEN the log lines mention the client, but no secret in any form
    captured = capsys.readouterr()
    logged = "\n".join(
        [captured.out, captured.err, *(repr(vars(record)) for record in caplog.records)]
    )
    assert created["id"] in logged  # the capture works
    for secret in (created["api_secret"], rotated["api_secret"]):
        assert secret not in logged
        assert secret[:16] not in logged
