"""Every admin route that changes state leaves a row in the audit log (issue 14, item 7).

The routes are enumerated from the resolver the admin function serves: a new
POST, PATCH, PUT or DELETE under /admin fails this test until it is audited
(or listed here as read-only, with why). PostgreSQL and Redis are the
machine's, SQS is moto's server.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.dead_letter_queue import SqsDeadLetterQueue
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import all_routes, create_api
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.fakes import PlainHasher

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "audit-test-admin-token-0123456789abcdef-xyz"
ACTOR = "admin:" + hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()[:12]
SOURCE_IP = "203.0.113.7"  # the sample event's requestContext.identity.sourceIp
CHANGING = {"POST", "PATCH", "PUT", "DELETE"}
# POST routes that change nothing, and why.
READ_ONLY = {
    ("POST", "/admin/templates/{name}/preview"): "renders; stores nothing",
}


@dataclass(frozen=True)
class Call:
    path: str
    body: Any = None
    query: dict[str, str] | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class Expected:
    action: str
    target_type: str
    target_id: str


class AdminStack:
    def __init__(self, database: Database, redis_url: str, queue_url: str) -> None:
        dlq_url = queue_url + "-dlq"  # the conftest queue fixture's DLQ
        self.dlq = SqsDeadLetterQueue(dlq_url, "us-east-1")
        settings = Settings(
            database_url=database.engine.url.render_as_string(hide_password=False),
            redis_url=redis_url,
            queue_url=queue_url,
            dead_letter_queue_url=dlq_url,
            templates_dir=REPO / "templates",
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            # Sending domains (issue 16): keys are sealed; DNS goes nowhere
            # (a closed port), so a verification is a quick "retry later".
            secrets_encryption_keys=SecretStr(SecretKeyring.generate_setting()),
            dns_resolver="127.0.0.1:9",
            dns_timeout_seconds=0.3,
        )
        self.services: Services = bootstrap(settings, hasher=PlainHasher())
        self.app = create_api(admin_routes(lambda: self.services), max_request_bytes=lambda: 65536)

    def call(self, method: str, call: Call) -> tuple[int, dict[str, Any]]:
        event = load_event("status/health")
        event["httpMethod"] = method
        event["path"] = event["resource"] = call.path
        event["queryStringParameters"] = call.query
        event["multiValueQueryStringParameters"] = (
            {k: [v] for k, v in call.query.items()} if call.query else None
        )
        with_headers(event, Authorization=f"Bearer {ADMIN_TOKEN}")
        if call.body is not None:
            with_headers(event, Content_Type=call.content_type)
            with_body(event, call.body)
        response = self.app.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"] or "{}")

    def audit(self, **query: str) -> list[dict[str, Any]]:
        status, body = self.call("GET", Call("/admin/audit", query=query or None))
        assert status == 200, body
        return list(body["entries"])

    def last_seq(self) -> int:
        entries = self.audit(limit="1")
        return int(entries[-1]["seq"]) if entries else 0

    def client(self) -> str:
        status, body = self.call("POST", Call("/admin/clients", {"name": "audited"}))
        assert status == 201, body
        return str(body["id"])

    def dead_letter(self, client_id: str) -> str:
        """A failed message whose record is in the DLQ, as the worker leaves one."""
        message = Message(
            id=uuid.uuid4(),
            client_id=uuid.UUID(client_id),
            trace_id=uuid.uuid4().hex,
            template_name="welcome",
            from_address="noreply@example.com",
            to=["ada@example.com"],
            props={},
            status=MessageStatus.FAILED,
        )
        with self.services.uow() as uow:
            uow.messages.add(message)
            uow.messages.append_event(message.id, EventType.ACCEPTED, {})
            uow.commit()
        self.dlq.add(message.id, message.trace_id, "retries ran out")
        return str(message.id)


Scenario = Callable[[AdminStack], tuple[Call, Expected]]


def _create_client(stack: AdminStack) -> tuple[Call, Expected]:
    return Call("/admin/clients", {"name": "new"}), Expected("client.create", "client", "*")


def _update_client(stack: AdminStack) -> tuple[Call, Expected]:
    ref = stack.client()
    return Call(f"/admin/clients/{ref}", {"rate_limit": 7}), Expected(
        "client.update", "client", ref
    )


def _suspend(stack: AdminStack) -> tuple[Call, Expected]:
    ref = stack.client()
    return Call(f"/admin/clients/{ref}/suspend"), Expected("client.suspend", "client", ref)


def _reactivate(stack: AdminStack) -> tuple[Call, Expected]:
    ref = stack.client()
    return Call(f"/admin/clients/{ref}/reactivate"), Expected("client.reactivate", "client", ref)


def _rotate(stack: AdminStack) -> tuple[Call, Expected]:
    ref = stack.client()
    return Call(f"/admin/clients/{ref}/rotate-secret", {"grace_seconds": 0}), Expected(
        "client.rotate_secret", "client", ref
    )


def _create_key(stack: AdminStack) -> tuple[Call, Expected]:
    body = {"name": "ci", "scopes": ["email:send"]}
    return Call(f"/admin/clients/{stack.client()}/api-keys", body), Expected(
        "api_key.create", "api_key", "*"
    )


def _key(stack: AdminStack) -> tuple[str, str]:
    ref = stack.client()
    body = {"name": "ci", "scopes": ["email:send"]}
    status, created = stack.call("POST", Call(f"/admin/clients/{ref}/api-keys", body))
    assert status == 201, created
    return ref, str(created["id"])


def _revoke_key(stack: AdminStack) -> tuple[Call, Expected]:
    ref, key_id = _key(stack)
    return Call(f"/admin/clients/{ref}/api-keys/{key_id}"), Expected(
        "api_key.revoke", "api_key", key_id
    )


def _rotate_key(stack: AdminStack) -> tuple[Call, Expected]:
    ref, key_id = _key(stack)
    return Call(f"/admin/clients/{ref}/api-keys/{key_id}/rotate"), Expected(
        "api_key.rotate", "api_key", key_id
    )


def _create_webhook(stack: AdminStack) -> tuple[Call, Expected]:
    body = {"url": "https://hooks.example.com/mailroom"}
    return Call(f"/admin/clients/{stack.client()}/webhooks", body), Expected(
        "webhook.create", "webhook", "*"
    )


def _webhook(stack: AdminStack) -> tuple[str, str]:
    ref = stack.client()
    body = {"url": "https://hooks.example.com/mailroom"}
    status, created = stack.call("POST", Call(f"/admin/clients/{ref}/webhooks", body))
    assert status == 201, created
    return ref, str(created["id"])


def _update_webhook(stack: AdminStack) -> tuple[Call, Expected]:
    ref, webhook_id = _webhook(stack)
    return Call(f"/admin/clients/{ref}/webhooks/{webhook_id}", {"enabled": False}), Expected(
        "webhook.update", "webhook", webhook_id
    )


def _delete_webhook(stack: AdminStack) -> tuple[Call, Expected]:
    ref, webhook_id = _webhook(stack)
    return Call(f"/admin/clients/{ref}/webhooks/{webhook_id}"), Expected(
        "webhook.delete", "webhook", webhook_id
    )


def _rotate_webhook(stack: AdminStack) -> tuple[Call, Expected]:
    ref, webhook_id = _webhook(stack)
    return Call(f"/admin/clients/{ref}/webhooks/{webhook_id}/rotate-secret"), Expected(
        "webhook.rotate_secret", "webhook", webhook_id
    )


def _test_webhook(stack: AdminStack) -> tuple[Call, Expected]:
    ref, webhook_id = _webhook(stack)
    return Call(f"/admin/clients/{ref}/webhooks/{webhook_id}/test"), Expected(
        "webhook.test", "webhook", webhook_id
    )


def _retry_webhook(stack: AdminStack) -> tuple[Call, Expected]:
    ref, webhook_id = _webhook(stack)
    status, sent = stack.call("POST", Call(f"/admin/clients/{ref}/webhooks/{webhook_id}/test"))
    assert status == 202, sent
    tail = f"/deliveries/{sent['delivery_id']}/retry"
    return Call(f"/admin/clients/{ref}/webhooks/{webhook_id}{tail}"), Expected(
        "webhook.retry", "webhook", webhook_id
    )


def _replay_webhook(stack: AdminStack) -> tuple[Call, Expected]:
    ref, webhook_id = _webhook(stack)
    hour = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"}
    return Call(f"/admin/clients/{ref}/webhooks/{webhook_id}/replay", hour), Expected(
        "webhook.replay", "webhook", webhook_id
    )


def _lift_reputation(stack: AdminStack) -> tuple[Call, Expected]:
    ref = stack.client()
    return Call(f"/admin/clients/{ref}/reputation/lift"), Expected("reputation.lift", "client", ref)


def _reconcile(stack: AdminStack) -> tuple[Call, Expected]:
    ref = stack.client()
    return Call("/admin/quota/reconcile", {"client": ref}), Expected(
        "quota.reconcile", "client", ref
    )


def _upload(stack: AdminStack) -> tuple[Call, Expected]:
    name = f"audited-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "subject": "Hi", "html": "<p>{{ who }}</p>"}
    return Call("/admin/templates", body), Expected("template.upload", "template", name)


def _add_suppression(stack: AdminStack) -> tuple[Call, Expected]:
    address = f"{uuid.uuid4().hex[:8]}@example.com"
    return Call("/admin/suppressions", {"address": address}), Expected(
        "suppression.add", "suppression", address
    )


def _remove_suppression(stack: AdminStack) -> tuple[Call, Expected]:
    address = f"{uuid.uuid4().hex[:8]}@example.com"
    status, body = stack.call("POST", Call("/admin/suppressions", {"address": address}))
    assert status == 201, body
    return Call("/admin/suppressions", query={"address": address}), Expected(
        "suppression.remove", "suppression", address
    )


def _import_suppressions(stack: AdminStack) -> tuple[Call, Expected]:
    client = stack.client()
    body = f"address\n{uuid.uuid4().hex[:8]}@example.com\n{uuid.uuid4().hex[:8]}@example.com\n"
    # One row for the whole file, not one per line.
    return Call(
        "/admin/suppressions/import", body, query={"client_id": client}, content_type="text/csv"
    ), Expected("suppression.import", "suppression_list", client)


def _redrive_all(stack: AdminStack) -> tuple[Call, Expected]:
    stack.dead_letter(stack.client())
    return Call("/admin/dlq/redrive"), Expected("dlq.redrive", "dead_letter_queue", stack.dlq.name)


def _redrive_one(stack: AdminStack) -> tuple[Call, Expected]:
    message_id = stack.dead_letter(stack.client())
    return Call(f"/admin/dlq/{message_id}/redrive"), Expected("dlq.redrive", "message", message_id)


def _purge(stack: AdminStack) -> tuple[Call, Expected]:
    stack.dead_letter(stack.client())
    return Call("/admin/dlq/purge", {"confirm": stack.dlq.name}), Expected(
        "dlq.purge", "dead_letter_queue", stack.dlq.name
    )


def _domain(stack: AdminStack) -> str:
    path = f"/admin/clients/{stack.client()}/domains"
    status, created = stack.call("POST", Call(path, {"domain": f"d{uuid.uuid4().hex[:8]}.example"}))
    assert status == 201, created
    return str(created["id"])


def _create_domain(stack: AdminStack) -> tuple[Call, Expected]:
    path = f"/admin/clients/{stack.client()}/domains"
    return Call(path, {"domain": "new.example"}), Expected("domain.create", "sending_domain", "*")


def _delete_domain(stack: AdminStack) -> tuple[Call, Expected]:
    domain_id = _domain(stack)
    return Call(f"/admin/domains/{domain_id}"), Expected(
        "domain.delete", "sending_domain", domain_id
    )


def _domain_action(action: str, audited: str) -> Scenario:
    def scenario(stack: AdminStack) -> tuple[Call, Expected]:
        domain_id = _domain(stack)
        return Call(f"/admin/domains/{domain_id}/{action}"), Expected(
            audited, "sending_domain", domain_id
        )

    return scenario


def _reseal_smtp_passwords(stack: AdminStack) -> tuple[Call, Expected]:
    keyring = stack.services.settings.secret_keyring
    assert keyring is not None
    return Call("/admin/smtp-configs/reseal"), Expected(
        "smtp_config.reseal", "secrets_key", keyring.current
    )


SCENARIOS: dict[tuple[str, str], Scenario] = {
    ("POST", "/admin/clients"): _create_client,
    ("PATCH", "/admin/clients/{client_ref}"): _update_client,
    ("POST", "/admin/clients/{client_ref}/suspend"): _suspend,
    ("POST", "/admin/clients/{client_ref}/reactivate"): _reactivate,
    ("POST", "/admin/clients/{client_ref}/rotate-secret"): _rotate,
    ("POST", "/admin/quota/reconcile"): _reconcile,
    ("POST", "/admin/templates"): _upload,
    ("POST", "/admin/suppressions"): _add_suppression,
    ("DELETE", "/admin/suppressions"): _remove_suppression,
    ("POST", "/admin/suppressions/import"): _import_suppressions,
    ("POST", "/admin/dlq/redrive"): _redrive_all,
    ("POST", "/admin/dlq/{message_id}/redrive"): _redrive_one,
    ("POST", "/admin/dlq/purge"): _purge,
    ("POST", "/admin/clients/{client_ref}/api-keys"): _create_key,
    ("DELETE", "/admin/clients/{client_ref}/api-keys/{key_id}"): _revoke_key,
    ("POST", "/admin/clients/{client_ref}/api-keys/{key_id}/rotate"): _rotate_key,
    ("POST", "/admin/clients/{client_ref}/domains"): _create_domain,
    ("DELETE", "/admin/domains/{domain_id}"): _delete_domain,
    # DNS times out here: the status stays pending, the check is still audited.
    ("POST", "/admin/domains/{domain_id}/verify"): _domain_action("verify", "domain.check"),
    ("POST", "/admin/domains/{domain_id}/rotate-dkim"): _domain_action(
        "rotate-dkim", "domain.rotate_dkim"
    ),
    ("POST", "/admin/domains/{domain_id}/retire-dkim"): _domain_action(
        "retire-dkim", "domain.retire_dkim"
    ),
    ("POST", "/admin/clients/{client_ref}/webhooks"): _create_webhook,
    ("PATCH", "/admin/clients/{client_ref}/webhooks/{webhook_id}"): _update_webhook,
    ("DELETE", "/admin/clients/{client_ref}/webhooks/{webhook_id}"): _delete_webhook,
    ("POST", "/admin/clients/{client_ref}/webhooks/{webhook_id}/rotate-secret"): _rotate_webhook,
    ("POST", "/admin/clients/{client_ref}/webhooks/{webhook_id}/test"): _test_webhook,
    (
        "POST",
        "/admin/clients/{client_ref}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    ): _retry_webhook,
    ("POST", "/admin/clients/{client_ref}/webhooks/{webhook_id}/replay"): _replay_webhook,
    ("POST", "/admin/smtp-configs/reseal"): _reseal_smtp_passwords,
    ("POST", "/admin/clients/{client_ref}/reputation/lift"): _lift_reputation,
}


def changing_admin_routes() -> set[tuple[str, str]]:
    """Every state-changing /admin route any function serves, read from the resolver."""
    app = create_api(all_routes(lambda: None), max_request_bytes=lambda: 0)  # type: ignore[arg-type, return-value]
    routes = [*app._static_routes, *app._dynamic_routes]
    return {
        (route.method, route.openapi_path)
        for route in routes
        if route.method in CHANGING and route.openapi_path.startswith("/admin")
    }


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str) -> AdminStack:
    return AdminStack(database, redis_url, queue_url)


def test_every_changing_admin_route_has_an_audit_scenario() -> None:
    # GIVEN the routes the resolver serves / WHEN compared with the scenarios below
    routes = changing_admin_routes()
    # THEN none is missing: a new route needs an audit row (and a scenario here)
    assert routes - set(SCENARIOS) - set(READ_ONLY) == set()
    assert set(SCENARIOS) | set(READ_ONLY) == routes, "a scenario names a route that is gone"


@pytest.mark.parametrize("route", sorted(SCENARIOS), ids=lambda r: f"{r[0]} {r[1]}")
def test_a_changing_admin_route_appends_an_audit_row(
    stack: AdminStack, route: tuple[str, str]
) -> None:
    # GIVEN what the route needs to act on
    method, _ = route
    call, expected = SCENARIOS[route](stack)
    before = stack.last_seq()
    # WHEN an operator calls it
    status, body = stack.call(method, call)
    assert 200 <= status < 300, body
    # THEN exactly one row was appended, naming who did what to which target
    [entry] = stack.audit(after=str(before))
    assert (entry["actor"], entry["source_ip"]) == (ACTOR, SOURCE_IP)
    assert (entry["action"], entry["target_type"]) == (expected.action, expected.target_type)
    if expected.target_id == "*":  # created by this very call
        assert entry["target_id"] == body["id"]
    else:
        assert entry["target_id"] == expected.target_id
    assert entry["before"] is not None or entry["after"] is not None


def test_the_dlq_rows_say_what_was_done(stack: AdminStack) -> None:
    # GIVEN two dead letters
    client = stack.client()
    first = stack.dead_letter(client)
    stack.dead_letter(client)
    before = stack.last_seq()
    # WHEN one is redriven and the rest purged
    assert stack.call("POST", Call(f"/admin/dlq/{first}/redrive"))[0] == 200
    assert stack.call("POST", Call("/admin/dlq/purge", {"confirm": stack.dlq.name}))[0] == 200
    # THEN the rows name the message redriven and count what was purged (the
    # other row was failed already, so none was marked)
    redrive, purge = stack.audit(after=str(before))
    assert redrive["after"]["redriven"] == [first]
    assert purge["after"] == {"purged": 1, "marked_failed": 0, "remaining": 0}
    # AND a refused purge (no confirmation) changed nothing and wrote nothing
    status, _ = stack.call("POST", Call("/admin/dlq/purge", {"confirm": "no"}))
    assert status == 422
    assert stack.audit(after=str(purge["seq"])) == []


def test_the_audit_log_reads_in_the_order_the_actions_happened(stack: AdminStack) -> None:
    # GIVEN a series of actions on one client
    ref = stack.client()
    for path, body in (
        (f"/admin/clients/{ref}/suspend", None),
        (f"/admin/clients/{ref}/reactivate", None),
        ("/admin/quota/reconcile", {"client": ref}),
    ):
        assert stack.call("POST", Call(path, body))[0] == 200
    assert stack.call("PATCH", Call(f"/admin/clients/{ref}", {"name": "renamed"}))[0] == 200
    # WHEN the log is read, whole and from a sequence number on
    entries = stack.audit(target=ref)
    # THEN oldest first, by strictly increasing sequence numbers
    assert [e["action"] for e in entries] == [
        "client.create",
        "client.suspend",
        "client.reactivate",
        "quota.reconcile",
        "client.update",
    ]
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(set(seqs))
    # AND `limit` keeps the latest, still oldest first; `after` reads on from a seq
    assert [e["seq"] for e in stack.audit(target=ref, limit="2")] == seqs[-2:]
    assert [e["seq"] for e in stack.audit(target=ref, after=str(seqs[1]), limit="2")] == seqs[2:4]
