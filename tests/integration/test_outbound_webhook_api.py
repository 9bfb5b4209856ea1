"""/v1/webhooks, /v1/events and the admin webhook routes over HTTP events, on real PostgreSQL,
Redis and moto's SQS (issue 19)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.webhook_queue import SqsWebhookQueue
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.outbound_webhooks import MAX_ENDPOINTS_PER_CLIENT
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.client_webhooks import webhook_routes
from tests.events import FakeLambdaContext, request_event
from tests.fakes import RecordingQueue

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-with-enough-entropy"


class Stack:
    def __init__(self, database_url: str, redis_url: str, queue_url: str, **settings: Any) -> None:
        settings.setdefault("secrets_encryption_keys", SecretKeyring.generate_setting())
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            **settings,
        )
        self.services: Services = bootstrap(
            self.settings,
            queue=RecordingQueue(),
            webhook_queue=SqsWebhookQueue(queue_url, "us-east-1"),
        )
        self.api = create_api(
            [webhook_routes(lambda: self.services)],
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
        key: dict[str, Any],
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, list[str]]]:
        event = request_event(
            method,
            path,
            body=body,
            query=query,
            X_Api_Key=key["key"],
            X_Api_Secret=key["secret"],
            Content_Type="application/json" if body is not None else None,
        )
        response = self.api.resolve(event, FakeLambdaContext())
        answer = json.loads(response["body"]) if response["body"] else None
        return response["statusCode"], answer, response["multiValueHeaders"]

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        event = request_event(method, path, body=body, Authorization=f"Bearer {ADMIN_TOKEN}")
        if body is not None:
            event["headers"]["Content-Type"] = "application/json"
            event["multiValueHeaders"]["Content-Type"] = ["application/json"]
        response = self.admin_api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"]) if response["body"] else None

    def client(self) -> dict[str, Any]:
        status, body = self.admin("POST", "/admin/clients", {"name": f"c-{uuid.uuid4().hex[:8]}"})
        assert status == 201, body
        return {**body, "key": body["api_key"], "secret": body["api_secret"]}

    def key(self, client: dict[str, Any], scopes: list[str]) -> dict[str, Any]:
        status, created = self.admin(
            "POST", f"/admin/clients/{client['id']}/api-keys", {"name": "k", "scopes": scopes}
        )
        assert status == 201, created
        return dict(created)


@pytest.fixture
def queue_url(aws: str) -> str:
    sqs = boto3.client("sqs", region_name="us-east-1")
    return str(sqs.create_queue(QueueName=f"wh-{uuid.uuid4().hex[:8]}")["QueueUrl"])


def url_of(database: Database) -> str:
    return str(database.engine.url.render_as_string(hide_password=False))


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str) -> Stack:
    return Stack(url_of(database), redis_url, queue_url)


def test_create_list_get_update_delete_and_the_secret_is_shown_once(
    stack: Stack, database: Database
) -> None:
    # GIVEN a client
    client = stack.client()
    # WHEN it creates an endpoint
    status, created, headers = stack.call(
        "POST",
        "/v1/webhooks",
        client,
        {"url": "https://hooks.example.com/mailroom", "events": ["email.bounced"]},
    )
    # THEN 201 with its id and a whsec_ secret, never cached on the way
    assert status == 201, created
    assert created["secret"].startswith("whsec_")
    assert headers["Cache-Control"] == ["no-store"]
    webhook = created["id"]
    # AND listing and reading it never show the secret
    status, listed, _ = stack.call("GET", "/v1/webhooks", client)
    assert status == 200
    assert [w["id"] for w in listed["webhooks"]] == [webhook]
    assert created["secret"] not in json.dumps(listed)
    assert all("secret" not in w for w in listed["webhooks"])
    assert listed["max_webhooks"] == MAX_ENDPOINTS_PER_CLIENT
    status, one, _ = stack.call("GET", f"/v1/webhooks/{webhook}", client)
    assert (status, one["events"], one["status"]) == (200, ["email.bounced"], "enabled")
    # WHEN it widens the types to all (null) and pauses it
    status, changed, _ = stack.call(
        "PATCH", f"/v1/webhooks/{webhook}", client, {"events": None, "enabled": False}
    )
    assert (status, changed["events"], changed["status"]) == (200, None, "disabled")
    # AND rotates its secret
    status, rotated, _ = stack.call("POST", f"/v1/webhooks/{webhook}/rotate-secret", client)
    assert status == 200
    assert rotated["secret"] != created["secret"]
    assert rotated["previous_secret_expires_at"] is not None
    # THEN another client sees none of it
    other = stack.client()
    assert stack.call("GET", f"/v1/webhooks/{webhook}", other)[0] == 404
    assert stack.call("DELETE", f"/v1/webhooks/{webhook}", other)[0] == 404
    # AND the owner deletes it
    assert stack.call("DELETE", f"/v1/webhooks/{webhook}", client)[0] == 204
    assert stack.call("GET", f"/v1/webhooks/{webhook}", client)[0] == 404
    # AND each change is in the audit log under the key that made it, never a secret
    with database.engine.connect() as connection:
        trail = connection.execute(
            text(
                "SELECT actor, action, after::text AS after FROM admin_audit_log "
                "WHERE target_type = 'webhook' ORDER BY id"
            )
        ).all()
    assert [row.action for row in trail] == [
        "webhook.create",
        "webhook.update",
        "webhook.rotate_secret",
        "webhook.delete",
    ]
    assert {row.actor for row in trail} == {f"key:{client['key']}"}
    assert all(created["secret"] not in (row.after or "") for row in trail)
    assert all("whsec_" not in (row.after or "") for row in trail)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"url": "http://hooks.example.com/x"}, 422, "invalid_webhook_url"),
        ({"url": "https://user:pw@hooks.example.com/x"}, 422, "invalid_webhook_url"),
        ({"url": "https://192.168.1.10/x"}, 422, "webhook_address_blocked"),
        ({"url": "https://169.254.169.254/x"}, 422, "webhook_address_blocked"),
        ({"url": "https://localhost:8080/x"}, 422, "invalid_webhook_url"),
        (
            {"url": "https://hooks.example.com/x", "events": ["email.exploded"]},
            422,
            "unknown_event_type",
        ),
        ({"url": "https://hooks.example.com/x", "events": []}, 422, "validation_error"),
        ({"url": "https://hooks.example.com/x", "secret": "mine"}, 422, "validation_error"),
        ({"url": "https://hooks.example.com/" + "a" * 3000}, 422, "validation_error"),
        ({"url": "https://hooks.example.com/x", "description": "a\x00b"}, 422, "unsupported_value"),
        ({"url": "https://hooks.example.com/x", "description": "a\x07b"}, 422, "validation_error"),
        ({"events": ["email.sent"]}, 422, "validation_error"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    stack: Stack, database: Database, body: dict[str, Any], status: int, code: str
) -> None:
    client = stack.client()
    answered, answer, _ = stack.call("POST", "/v1/webhooks", client, body)
    assert (answered, answer["error"]["code"]) == (status, code), answer
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM webhook_endpoints")).scalar() == 0


def test_more_than_the_documented_number_of_endpoints_is_409(stack: Stack) -> None:
    client = stack.client()
    for n in range(MAX_ENDPOINTS_PER_CLIENT):
        body = {"url": f"https://h{n}.example.com/x"}
        assert stack.call("POST", "/v1/webhooks", client, body)[0] == 201
    status, answer, _ = stack.call("POST", "/v1/webhooks", client, {"url": "https://x.example.com"})
    assert (status, answer["error"]["code"]) == (409, "webhook_limit_reached")


def test_a_key_without_webhook_manage_is_refused(stack: Stack) -> None:
    client = stack.client()
    sender = stack.key(client, ["email:send"])
    status, answer, _ = stack.call(
        "POST", "/v1/webhooks", sender, {"url": "https://hooks.example.com/x"}
    )
    assert (status, answer["error"]["code"]) == (403, "insufficient_scope")
    manager = stack.key(client, ["webhook:manage"])
    assert stack.call("GET", "/v1/webhooks", manager)[0] == 200


def test_without_a_keyring_creation_is_503_and_nothing_is_written(
    database: Database, redis_url: str, queue_url: str
) -> None:
    stack = Stack(url_of(database), redis_url, queue_url, secrets_encryption_keys="")
    client = stack.client()
    status, answer, _ = stack.call(
        "POST", "/v1/webhooks", client, {"url": "https://hooks.example.com/x"}
    )
    assert (status, answer["error"]["code"]) == (503, "secrets_not_configured")


def test_ids_that_are_not_ours_are_404_and_bad_cursors_422(stack: Stack) -> None:
    client = stack.client()
    for path in ["/v1/webhooks/not-a-uuid", f"/v1/webhooks/{uuid.uuid4()}/deliveries"]:
        status, answer, _ = stack.call("GET", path, client)
        assert (status, answer["error"]["code"]) == (404, "webhook_not_found")
    status, answer, _ = stack.call("GET", "/v1/events", client, query={"after": "abc"})
    assert status == 422
    status, answer, _ = stack.call("GET", "/v1/events", client, query={"types": "email.nope"})
    assert (status, answer["error"]["code"]) == (422, "unknown_event_type")
    status, answer, _ = stack.call("GET", "/v1/events", client)
    assert (status, answer["data"]) == (200, [])


def test_test_replay_and_retry_routes_queue_deliveries(stack: Stack, queue_url: str) -> None:
    # GIVEN an endpoint
    client = stack.client()
    _, created, _ = stack.call("POST", "/v1/webhooks", client, {"url": "https://h.example.com/"})
    webhook = created["id"]
    # WHEN a test event is asked for
    status, sent, _ = stack.call("POST", f"/v1/webhooks/{webhook}/test", client)
    # THEN it is queued for the dispatcher
    assert status == 202
    assert sent["webhook_id"].startswith("evt_")
    sqs = boto3.client("sqs", region_name="us-east-1")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(messages[0]["Body"]) == {"delivery_ids": [sent["delivery_id"]]}
    # AND a replay with end before start is refused
    status, answer, _ = stack.call(
        "POST",
        f"/v1/webhooks/{webhook}/replay",
        client,
        {"start": "2026-12-02T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
    )
    assert status == 422
    status, answer, _ = stack.call(
        "POST",
        f"/v1/webhooks/{webhook}/replay",
        client,
        {"start": "2026-12-01T00:00:00Z", "end": "2026-12-02T00:00:00Z"},
    )
    assert (status, answer) == (202, {"deliveries": 0})
    # AND retrying an unknown delivery is 404
    status, answer, _ = stack.call(
        "POST", f"/v1/webhooks/{webhook}/deliveries/999999/retry", client
    )
    assert (status, answer["error"]["code"]) == (404, "webhook_delivery_not_found")


def test_operators_list_create_and_disable_a_clients_endpoints(stack: Stack) -> None:
    client = stack.client()
    status, created = stack.admin(
        "POST", f"/admin/clients/{client['id']}/webhooks", {"url": "https://ops.example.com/"}
    )
    assert status == 201, created
    status, listed = stack.admin("GET", f"/admin/clients/{client['id']}/webhooks")
    assert [w["id"] for w in listed["webhooks"]] == [created["id"]]
    status, changed = stack.admin(
        "PATCH", f"/admin/clients/{client['id']}/webhooks/{created['id']}", {"enabled": False}
    )
    assert (status, changed["status"]) == (200, "disabled")
    status, _ = stack.admin("DELETE", f"/admin/clients/{client['id']}/webhooks/{created['id']}")
    assert status == 204
