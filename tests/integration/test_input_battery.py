"""The hand battery on real PostgreSQL, Redis and SQS (moto): odd input is a 4xx, never a 5xx.

Every route of the client API, the admin API and the webhooks gets input
that once reached PostgreSQL as something it refuses (a NUL, a lone
surrogate, an integer past its column, a cursor past bigint) or that made
Python raise (1e400, 4,301 digits, 100,000 brackets, 100 nested ifs). Each
answer must be a 4xx in the one error shape, and nothing may be written: no
row in any table, no message in the queue, no quota counted in Redis.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.webhooks.registry import WebhookRegistry
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.tenancy import QuotaPeriod
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.webhooks import create_webhooks_api, webhooks_function_routes
from tests.events import FakeLambdaContext, load_event, with_headers
from tests.fakes import ScriptedProvider
from tests.fakes_feedback import FixedClock, MemoryReplayGuard, StaticFetcher
from tests.feedback_support import (
    CERT_URL,
    MAILGUN_SIGNING_KEY,
    NOW,
    TOPIC_ARN,
    fixture,
    mailgun_signed,
    sendgrid_signer,
    ses_envelope,
    sns_signer,
    webhook_event,
)

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "input-battery-admin-token-with-enough-entropy"
WELCOME: dict[str, Any] = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())
TABLES = (
    "clients",
    "admin_audit_log",
    "messages",
    "idempotency_keys",
    "message_events",
    "delivery_events",
    "message_recipients",
    "suppressions",
    "template_versions",
)


class Stack:
    """The API, admin and webhook resolvers as the functions build them, on the real services."""

    def __init__(self, database_url: str, redis_url: str, queue_url: str) -> None:
        sqs = boto3.client("sqs", region_name="us-east-1")
        self.queue_url = queue_url
        self.dlq_url = sqs.get_queue_url(QueueName=queue_url.rsplit("/", 1)[1] + "-dlq")["QueueUrl"]
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            queue_url=queue_url,
            dead_letter_queue_url=self.dlq_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            sns_topic_arns=TOPIC_ARN,
            sendgrid_webhook_public_key=sendgrid_signer().public_key,
            mailgun_webhook_signing_key=SecretStr(MAILGUN_SIGNING_KEY),
        )
        self.settings = settings
        self.services: Services = bootstrap(
            settings,
            providers={"smtp": ScriptedProvider()},
            webhooks=WebhookRegistry(
                settings,
                fetcher=StaticFetcher({CERT_URL: sns_signer().certificate_pem}),
                replay_guard=MemoryReplayGuard(),
                clock=FixedClock(NOW),
            ),
        )
        limit = lambda: settings.max_request_bytes  # noqa: E731 - as the functions pass it
        self.api = create_api(
            [send_routes(lambda: self.services), status_routes(lambda: self.services)],
            max_request_bytes=limit,
            client_gate=ClientGate(lambda: self.services),
        )
        self.admin_api = create_api(admin_routes(lambda: self.services), max_request_bytes=limit)
        self.webhooks_api = create_webhooks_api(
            webhooks_function_routes(lambda: self.services),
            max_request_bytes=lambda: settings.webhook_max_request_bytes,
        )
        status, created = self.admin("POST", "/admin/clients", json.dumps({"name": "battery"}))
        assert status == 201, created
        self.client = created

    def _event(self, method: str, path: str, body: str | None, **headers: str) -> dict[str, Any]:
        event = load_event("send/send-welcome")
        event["httpMethod"], event["path"], event["resource"] = method, path, path
        event["body"], event["isBase64Encoded"] = body, False
        event["queryStringParameters"] = event["multiValueQueryStringParameters"] = None
        with_headers(event, **headers)
        return event

    def call(
        self,
        app: Any,
        event: dict[str, Any],
        query: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        if query:
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
        response = app.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"] or "{}")

    def client_call(
        self, method: str, path: str, body: str | None = None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        event = self._event(
            method,
            path,
            body,
            X_Api_Key=self.client["api_key"],
            X_Api_Secret=self.client["api_secret"],
            Content_Type="application/json",
        )
        return self.call(self.api, event, query)

    def admin(
        self, method: str, path: str, body: str | None = None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        event = self._event(
            method,
            path,
            body,
            Authorization=f"Bearer {ADMIN_TOKEN}",
            Content_Type="application/json",
        )
        return self.call(self.admin_api, event, query)

    def webhook(self, provider: str, body: str, **headers: str) -> tuple[int, dict[str, Any]]:
        return self.call(self.webhooks_api, webhook_event(provider, body, **headers))

    def written(self, database: Database) -> dict[str, Any]:
        """Rows in every table, messages in both queues, this month's quota counter."""
        with database.engine.connect() as connection:
            rows = {
                table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in TABLES
            }
        sqs = boto3.client("sqs", region_name="us-east-1")
        for name, url in (("queue", self.queue_url), ("dlq", self.dlq_url)):
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            rows[name] = attributes
        period = QuotaPeriod.containing(datetime.now(UTC))
        rows["quota"] = self.services.quota.read(uuid.UUID(self.client["id"]), period)
        return rows


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str) -> Stack:
    url = database.engine.url.render_as_string(hide_password=False)
    with database.engine.begin() as connection:
        connection.execute(
            text("TRUNCATE suppressions, template_versions, delivery_events CASCADE")
        )
    return Stack(url, redis_url, queue_url)


def _refused(answer: tuple[int, dict[str, Any]], case: str) -> dict[str, Any]:
    status, body = answer
    assert 400 <= status < 500, f"{case}: {status} {body}"
    assert set(body) == {"error"}, f"{case}: {body}"
    assert set(body["error"]) == {"code", "message", "details"}, f"{case}: {body}"
    return body["error"]  # type: ignore[no-any-return]


def _send(**overrides: Any) -> dict[str, Any]:
    return {"template": "welcome", "to": "ada@example.com", "props": WELCOME, **overrides}


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


SEND_CASES: list[tuple[str, str, str]] = [
    (
        "nul in props",
        json.dumps(_send(props={**WELCOME, "first_name": "A\u0000"})),
        "unsupported_value",
    ),
    ("nul in a props key", json.dumps(_send(props={**WELCOME, "k\u0000": 1})), "unsupported_value"),
    ("nul in metadata", json.dumps(_send(metadata={"k": "\u0000"})), "unsupported_value"),
    ("nul in a metadata key", json.dumps(_send(metadata={"\u0000": "v"})), "unsupported_value"),
    ("nul in subject", json.dumps(_send(subject="\u0000")), "unsupported_value"),
    ("nul in to", json.dumps(_send(to="a\u0000@example.com")), "unsupported_value"),
    (
        "lone surrogate in props",
        json.dumps(_send(props={**WELCOME, "first_name": "\ud800"})),
        "unsupported_value",
    ),
    (
        "lone surrogate in metadata",
        json.dumps(_send(metadata={"k": "\udfff"})),
        "unsupported_value",
    ),
    (
        "1e400 in props",
        json.dumps(_send(props={**WELCOME, "n": 0})).replace('"n": 0', '"n": 1e400'),
        "unsupported_value",
    ),
    (
        "4301 digits in metadata",
        json.dumps(_send(metadata={"n": 0})).replace('"n": 0', '"n": ' + "9" * 4301),
        "unsupported_value",
    ),
    ("a 4000-digit int in metadata", json.dumps(_send(metadata={"n": 10**3999})), "accepted"),
    (
        "NaN in props",
        json.dumps(_send(props={**WELCOME, "n": 0})).replace('"n": 0', '"n": NaN'),
        "malformed_json",
    ),
    ("deep props", json.dumps(_send(props={**WELCOME, "d": _deep(100)})), "unsupported_value"),
    (
        "template_version 2^31",
        json.dumps(_send(template="welcome", template_version=2**31)),
        "validation_error",
    ),
    (
        "template_version 2^31 - 1 of a file template",
        json.dumps(_send(template_version=2**31 - 1)),
        "unknown_template",
    ),
    ("template_version 2^63", json.dumps(_send(template_version=2**63)), "validation_error"),
    (
        "template 2^31 - 1 of an unknown upload",
        json.dumps(_send(template="no-such-upload", template_version=2**31 - 1)),
        "unknown_template",
    ),
]
for field in ("to", "cc", "bcc", "reply_to", "from", "subject"):
    value = "Hi\r\nBcc: eve@example.com" if field == "subject" else "a@example.com\r\nBcc: e@x.io"
    SEND_CASES.append((f"CRLF in {field}", json.dumps(_send(**{field: value})), "header_injection"))


@pytest.mark.parametrize(
    ("body", "code"), [c[1:] for c in SEND_CASES], ids=[c[0] for c in SEND_CASES]
)
def test_send_refuses_odd_input_and_writes_nothing(
    stack: Stack, database: Database, body: str, code: str
) -> None:
    # GIVEN a client that has sent nothing
    before = stack.written(database)
    # WHEN it sends the odd body
    answer = stack.client_call("POST", "/v1/send", body)
    if code == "accepted":
        # (the control: what PostgreSQL can hold is stored)
        assert answer[0] == 202, answer
        return
    # THEN a 4xx with that code, and no row, queue message or quota charge
    error = _refused(answer, code)
    assert error["code"] == code, error
    assert stack.written(database) == before


STATUS_CASES: list[tuple[str, str, dict[str, str] | None]] = [
    ("nul recipient", "/v1/messages", {"recipient": "a\x00"}),
    ("nul cursor", "/v1/messages", {"cursor": "\x00"}),
    ("garbage cursor", "/v1/messages", {"cursor": "////"}),
    (
        "cursor of a naive time",
        "/v1/messages",
        {"cursor": base64.urlsafe_b64encode(b"2026-01-01T00:00:00|" + b"0" * 36).decode()},
    ),
    (
        "cursor with year 0",
        "/v1/messages",
        {"cursor": base64.urlsafe_b64encode(b"0000-01-01T00:00:00+00:00|x").decode()},
    ),
    ("since as a huge timestamp", "/v1/messages", {"since": "99999999999999999999"}),
    ("since out of range", "/v1/messages", {"since": "10000-01-01T00:00:00Z"}),
    ("status unknown", "/v1/messages", {"status": "\ud800"}),
    ("limit huge", "/v1/messages", {"limit": "9" * 40}),
    ("nul message id", "/v1/messages/\x00", None),
    ("long message id", "/v1/messages/" + "a" * 5000, None),
    ("surrogate message id", "/v1/messages/\udc80/events", None),
]


@pytest.mark.parametrize(
    ("path", "query"), [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES]
)
def test_status_routes_refuse_odd_parameters(
    stack: Stack, path: str, query: dict[str, str] | None
) -> None:
    _refused(stack.client_call("GET", path, None, query), path)


def test_status_list_filters_at_the_edges_of_time_answer(stack: Stack) -> None:
    # GIVEN the first and last instants PostgreSQL and Python can both hold
    for query in (
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"since": "1970-01-01", "until": "1969-12-31"},
    ):
        status, body = stack.client_call("GET", "/v1/messages", None, query)
        # THEN an answer, never a 5xx
        assert status in (200, 422), (query, status, body)


ADMIN_CASES: list[tuple[str, str, str, Any, dict[str, str] | None]] = [
    # (case, method, path, body, query)
    ("client name nul", "POST", "/admin/clients", {"name": "\u0000"}, None),
    ("client name surrogate", "POST", "/admin/clients", {"name": "\ud800x"}, None),
    (
        "client provider order nul",
        "POST",
        "/admin/clients",
        {"name": "x", "provider_order": ["\u0000"]},
        None,
    ),
    ("client quota 2^31", "POST", "/admin/clients", {"name": "x", "quota_limit": 2**31}, None),
    ("client patch nul", "PATCH", "/admin/clients/{client}", {"name": "a\u0000"}, None),
    ("client ref nul", "GET", "/admin/clients/\x00", None, None),
    ("client ref long", "GET", "/admin/clients/" + "x" * 5000, None, None),
    ("client ref surrogate", "POST", "/admin/clients/\ud800/suspend", None, None),
    (
        "rotate grace 1e400",
        "POST",
        "/admin/clients/{client}/rotate-secret",
        '{"grace_seconds": 1e400}',
        None,
    ),
    ("reconcile client nul", "POST", "/admin/quota/reconcile", {"client": "\u0000"}, None),
    ("reconcile period 9999-99", "POST", "/admin/quota/reconcile", {"period": "9999-99"}, None),
    ("reconcile period 0000-01", "POST", "/admin/quota/reconcile", {"period": "0000-01"}, None),
    ("audit target nul", "GET", "/admin/audit", None, {"target": "\x00"}),
    ("audit limit huge", "GET", "/admin/audit", None, {"limit": "99999999999999999999"}),
    (
        "suppression note nul",
        "POST",
        "/admin/suppressions",
        {"address": "a@example.com", "note": "\u0000"},
        None,
    ),
    ("suppression address nul", "POST", "/admin/suppressions", {"address": "\u0000"}, None),
    (
        "suppression expires year 0",
        "POST",
        "/admin/suppressions",
        {"address": "a@example.com", "expires_at": "0000-01-01T00:00:00Z"},
        None,
    ),
    (
        "suppression client id nul",
        "POST",
        "/admin/suppressions",
        {"address": "a@example.com", "client_id": "\u0000"},
        None,
    ),
    (
        "suppression cursor past bigint",
        "GET",
        "/admin/suppressions",
        None,
        {"cursor": "99999999999999999999"},
    ),
    ("suppression cursor superscript", "GET", "/admin/suppressions", None, {"cursor": "²"}),
    ("suppression list address nul", "GET", "/admin/suppressions", None, {"address": "\x00"}),
    (
        "suppression delete address nul",
        "DELETE",
        "/admin/suppressions",
        None,
        {"address": "a\x00@example.com"},
    ),
    (
        "template html nul",
        "POST",
        "/admin/templates",
        {"name": "t-nul", "subject": "s", "html": "\u0000"},
        None,
    ),
    (
        "template sample nul",
        "POST",
        "/admin/templates",
        {"name": "t-nul", "subject": "s", "html": "x", "sample": {"a": "\u0000"}},
        None,
    ),
    (
        "template schema nul key",
        "POST",
        "/admin/templates",
        {"name": "t-nul", "subject": "s", "html": "x", "schema": {"properties": {"\u0000": {}}}},
        None,
    ),
    (
        "template 100 nested ifs",
        "POST",
        "/admin/templates",
        {"name": "t-if", "subject": "s", "html": "{% if a %}" * 100 + "{% endif %}" * 100},
        None,
    ),
    (
        "template schema $ref cycle",
        "POST",
        "/admin/templates",
        {"name": "t-ref", "subject": "s", "html": "x", "schema": {"$ref": "#"}},
        None,
    ),
    (
        "template schema $schema int",
        "POST",
        "/admin/templates",
        {"name": "t-ref", "subject": "s", "html": "x", "schema": {"$schema": 1}},
        None,
    ),
    ("preview version 2^31", "POST", "/admin/templates/welcome/preview", {"version": 2**31}, None),
    (
        "preview props nul",
        "POST",
        "/admin/templates/welcome/preview",
        {"props": {"x": "\u0000"}},
        None,
    ),
    ("preview name nul", "POST", "/admin/templates/\x00/preview", None, None),
    ("dlq redrive nul", "POST", "/admin/dlq/\x00/redrive", None, None),
    ("dlq purge confirm nul", "POST", "/admin/dlq/purge", {"confirm": "\u0000"}, None),
    ("dlq limit huge", "GET", "/admin/dlq", None, {"limit": "1e400"}),
    ("admin health put", "PUT", "/admin/health", None, None),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "query"),
    [c[1:] for c in ADMIN_CASES],
    ids=[c[0] for c in ADMIN_CASES],
)
def test_admin_routes_refuse_odd_input_and_write_nothing(
    stack: Stack,
    database: Database,
    method: str,
    path: str,
    body: Any,
    query: dict[str, str] | None,
) -> None:
    before = stack.written(database)
    raw = body if isinstance(body, str) or body is None else json.dumps(body)
    answer = stack.admin(method, path.format(client=stack.client["id"]), raw, query)
    _refused(answer, path)
    assert stack.written(database) == before


def _sendgrid(events: Any) -> tuple[str, dict[str, str]]:
    body = json.dumps(events)
    return body, sendgrid_signer().headers(body.encode())


WEBHOOK_CASES: list[tuple[str, str, str, dict[str, str]]] = []
for label, event in [
    ("nul email", {"email": "a\u0000@example.com", "event": "delivered", "timestamp": 1}),
    (
        "nul id",
        {"email": "a@example.com", "event": "bounce", "sg_message_id": "\u0000", "timestamp": 1},
    ),
    (
        "surrogate reason",
        {"email": "a@example.com", "event": "bounce", "reason": "\ud800", "timestamp": 1},
    ),
    ("huge timestamp", {"email": "a@example.com", "event": "delivered", "timestamp": 10**400}),
    ("deep", {"email": "a@example.com", "event": "delivered", "x": _deep(100)}),
]:
    sg_body, sg_headers = _sendgrid([event])
    WEBHOOK_CASES.append((f"sendgrid {label}", "sendgrid", sg_body, sg_headers))
_mg = fixture("mailgun", "failed-permanent.json")
_mg["event-data"]["recipient"] = "a\u0000@example.com"
WEBHOOK_CASES.append(("mailgun nul recipient", "mailgun", json.dumps(mailgun_signed(_mg)), {}))
_mg = fixture("mailgun", "failed-permanent.json")
_mg["event-data"]["delivery-status"] = {"description": "\ud800"}
WEBHOOK_CASES.append(("mailgun lone surrogate", "mailgun", json.dumps(mailgun_signed(_mg)), {}))
_ses = fixture("ses", "notification-bounce-permanent.json")
_ses["bounce"]["bouncedRecipients"][0]["emailAddress"] = "a\u0000@example.com"
WEBHOOK_CASES.append(
    (
        "ses nul recipient",
        "ses",
        json.dumps(ses_envelope(_ses)),
        {"x-amz-sns-message-type": "Notification"},
    )
)
WEBHOOK_CASES.append(
    (
        "ses message 1e400",
        "ses",
        json.dumps(ses_envelope('{"notificationType": "Bounce", "x": 1e400}')),
        {"x-amz-sns-message-type": "Notification"},
    )
)
WEBHOOK_CASES.append(("garbage bytes", "sendgrid", "\x00\x01", {}))
WEBHOOK_CASES.append(("get a provider", "mailgun", "", {}))


@pytest.mark.parametrize(
    ("provider", "body", "headers"),
    [c[1:] for c in WEBHOOK_CASES],
    ids=[c[0] for c in WEBHOOK_CASES],
)
def test_signed_webhooks_with_unstorable_payloads_are_4xx_and_store_nothing(
    stack: Stack, database: Database, provider: str, body: str, headers: dict[str, str]
) -> None:
    # GIVEN a payload the provider's signature covers, holding what PostgreSQL refuses
    before = stack.written(database)
    # WHEN it is posted
    answer = stack.webhook(provider, body, **headers)
    # THEN 4xx (the provider stops retrying), nothing stored
    _refused(answer, provider)
    assert stack.written(database) == before
