"""The HTTP API on fakes: status codes, the error shape, and nothing half-written."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from mailroom.adapters.templates import FileTemplateStore, TemplateRenderer
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.api import create_api, send_routes, status_routes, trace_id_of
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.services.clients import RegisteredClient, register_client
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
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
LIMIT = 4096


class Api:
    def __init__(self, *, queue_fails: bool = False, healthy: bool = True) -> None:
        self.uow = FakeUnitOfWork()
        self.queue = RecordingQueue(fail=queue_fails)
        self.rate_limiter = FakeRateLimiter()
        self.quota = FakeQuotaCounter()

        def probe() -> None:
            if not healthy:
                raise ConnectionError("redis is down")

        self.services: Services = bootstrap(
            Settings(templates_dir=TEMPLATES, max_recipients=5),
            uow=lambda: self.uow,
            hasher=PlainHasher(),
            queue=self.queue,
            templates=FileTemplateStore(TEMPLATES),
            renderer=TemplateRenderer(),
            providers={"smtp": ScriptedProvider()},
            rate_limiter=self.rate_limiter,
            quota=self.quota,
            credential_versions=FakeCredentialVersions(),
            health_probes={"redis": probe},
        )
        self.client: RegisteredClient = register_client(self.uow, PlainHasher(), name="acme")
        # As functions/send and functions/status build theirs.
        self.app = create_api(
            [send_routes(lambda: self.services), status_routes(lambda: self.services)],
            max_request_bytes=lambda: LIMIT,
            client_gate=ClientGate(lambda: self.services),
        )

    def call(self, event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
        response = self.app.resolve(event, FakeLambdaContext())
        body = json.loads(response["body"]) if response.get("body") else {}
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers[name.lower()] = ", ".join(values)
        return response["statusCode"], body, headers

    def send_event(self, body: Any = None, **headers: str | None) -> dict[str, Any]:
        event = load_event("send/send-welcome")
        with_headers(event, X_Api_Key=self.client.api_key, X_Api_Secret=self.client.api_secret)
        with_headers(event, **headers)
        if body is not None:
            with_body(event, body)
        return event


def _welcome(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": "welcome",
        "to": "ada@example.com",
        "props": json.loads((TEMPLATES / "welcome" / "sample.json").read_text()),
    }
    body.update(overrides)
    return body


def test_send_answers_202_with_the_id_and_queues_it() -> None:
    # GIVEN a registered client and the canonical send event
    api = Api()
    # WHEN it is sent
    status, body, headers = api.call(api.send_event())
    # THEN 202 with the id; the row is queued and the queue holds the same id
    assert status == 202
    assert body["status"] == "queued"
    stored = api.uow.messages.rows
    assert [str(m) for m in stored] == [body["id"]]
    assert [str(m) for m, _ in api.queue.sent] == [body["id"]]
    # the X-Ray root of the canonical event becomes the trace id
    assert headers["x-trace-id"] == "1-6741a2b3-5c1f0e2d9a8b7c6d5e4f3a2b"
    assert next(iter(stored.values())).metadata == {"signup_id": "su_1842"}


@pytest.mark.parametrize(
    ("headers", "code", "status"),
    [
        ({"X_Api_Key": None, "X_Api_Secret": None}, "unauthorized", 401),
        ({"X_Api_Secret": None}, "unauthorized", 401),
        ({"X_Api_Secret": "wrong"}, "unauthorized", 401),
        ({"X_Api_Key": "mr_live_nobody"}, "unauthorized", 401),
    ],
)
def test_bad_credentials_are_refused_and_nothing_is_written(
    headers: dict[str, str | None], code: str, status: int
) -> None:
    api = Api()
    got_status, body, _ = api.call(api.send_event(**headers))
    assert (got_status, body["error"]["code"]) == (status, code)
    assert body["error"]["message"]
    assert api.uow.messages.rows == {}
    assert api.queue.sent == []


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ('{"template": "welcome", "to": ', 400, "malformed_json", None),
        ("not json at all", 400, "malformed_json", None),
        (_welcome(template="nope"), 422, "unknown_template", "template"),
        (_welcome(props=["a", "b"]), 422, "validation_error", "props"),
        (_welcome(props="x"), 422, "validation_error", "props"),
        (_welcome(to="not-an-address"), 422, "validation_error", "to.0"),
        (_welcome(to=["a@example.com", "broken@"]), 422, "validation_error", "to.1"),
        (_welcome(subject="Hi\r\nBcc: victim@example.com"), 422, "header_injection", "subject"),
        (_welcome(to="a@example.com\r\nBcc: v@example.com"), 422, "header_injection", "to.0"),
        (
            _welcome(**{"from": "x@example.com\nBcc: v@example.com"}),
            422,
            "header_injection",
            "from",
        ),
        (_welcome(cc="c@example.com\rX: y"), 422, "header_injection", "cc.0"),
        (_welcome(reply_to="r@example.com\n"), 422, "header_injection", "reply_to.0"),
        (_welcome(cc=[f"c{i}@example.com" for i in range(5)]), 422, "validation_error", "to"),
        ({"to": "a@example.com"}, 422, "validation_error", "template"),
        # under the field's 998 characters, over 998 octets once encoded
        (_welcome(subject="ü" * 400), 422, "subject_too_long", "subject"),
        (_welcome(props={"blob": "x" * LIMIT}), 413, "payload_too_large", None),
        # the size is checked before parsing: an oversized broken body is 413, not 400
        ("{" + "x" * LIMIT, 413, "payload_too_large", None),
    ],
)
def test_bad_input_gets_a_clear_error_and_writes_nothing(
    body: Any, status: int, code: str, field: str | None
) -> None:
    api = Api()
    got_status, answer, _ = api.call(api.send_event(body))
    assert got_status == status, answer
    error = answer["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], list)
    if field is not None:
        assert field in {detail.get("field") for detail in error["details"]}, error
    assert api.uow.messages.rows == {}
    assert api.queue.sent == []


def test_queue_outage_is_503_and_the_row_is_marked_failed() -> None:
    api = Api(queue_fails=True)
    status, body, _ = api.call(api.send_event())
    assert (status, body["error"]["code"]) == (503, "enqueue_failed")
    (message,) = api.uow.messages.rows.values()
    assert message.status.value == "failed"
    assert body["error"]["details"] == [{"message_id": str(message.id)}]


def test_status_shows_the_history_to_the_owner_only() -> None:
    api = Api()
    _, sent, _ = api.call(api.send_event())
    event = load_event("status/get-message")
    event["path"] = f"/v1/messages/{sent['id']}"
    event["pathParameters"] = {"message_id": sent["id"]}
    with_headers(event, X_Api_Key=api.client.api_key, X_Api_Secret=api.client.api_secret)

    status, body, _ = api.call(event)
    assert status == 200
    assert body["id"] == sent["id"]
    assert body["status"] == "queued"
    assert body["from"] == "Mailroom <noreply@example.com>"
    assert [e["type"] for e in body["events"]] == ["accepted"]

    other = register_client(api.uow, PlainHasher(), name="other")
    with_headers(event, X_Api_Key=other.api_key, X_Api_Secret=other.api_secret)
    status, body, _ = api.call(event)
    assert (status, body["error"]["code"]) == (404, "message_not_found")


def test_health_reports_each_dependency() -> None:
    # (No DLQ is configured here, so its depth is unknown; nothing is queued.)
    assert Api().call(load_event("status/health"))[:2] == (
        200,
        {
            "status": "ok",
            "checks": {"redis": "ok"},
            "backlog": {
                "dead_letter_depth": None,
                "oldest_queued_age_seconds": 0.0,
                "oldest_overdue_scheduled_seconds": None,
            },
        },
    )
    status, body, _ = Api(healthy=False).call(load_event("status/health"))
    assert status == 503
    assert body["checks"]["redis"].startswith("error: ConnectionError")


def test_unknown_route_uses_the_error_shape() -> None:
    event = load_event("status/health")
    event["path"] = event["resource"] = "/nope"
    status, body, _ = Api().call(event)
    assert (status, body["error"]["code"]) == (404, "route_not_found")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            {"X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"},
            "1-5759e988-bd862e3fe1be46a994272793",
        ),
    ],
)
def test_trace_id_continues_the_callers_trace(headers: dict[str, str], expected: str) -> None:
    assert trace_id_of(headers) == expected


def test_trace_id_is_generated_when_absent() -> None:
    first, second = trace_id_of({}), trace_id_of({"traceparent": "garbage"})
    assert len(first) == 32
    assert first != second


def test_body_limit_counts_bytes_not_characters() -> None:
    # GIVEN a body under the limit in characters but over it in UTF-8 bytes
    api = Api()
    body = json.dumps(_welcome(props={"blob": "é" * (LIMIT // 2 + 100)}), ensure_ascii=False)
    assert len(body) < LIMIT < len(body.encode())
    status, answer, _ = api.call(api.send_event(body))
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
def test_a_body_declared_as_something_else_than_json_is_415(content_type: str) -> None:
    api = Api()
    status, answer, _ = api.call(api.send_event(Content_Type=content_type))
    assert (status, answer["error"]["code"]) == (415, "unsupported_media_type")
    assert "application/json" in answer["error"]["message"]
    assert api.uow.messages.rows == {}


@pytest.mark.parametrize("content_type", [None, "application/json; charset=utf-8"])
def test_json_or_no_content_type_is_read_as_json(content_type: str | None) -> None:
    api = Api()
    assert api.call(api.send_event(Content_Type=content_type))[0] == 202


def test_base64_bodies_are_decoded() -> None:
    api = Api()
    event = api.send_event()
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    status, _, _ = api.call(event)
    assert status == 202
