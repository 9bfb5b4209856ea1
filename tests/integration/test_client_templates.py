"""Client-owned templates on real PostgreSQL and Redis (issue 15, item 3).

A client uploads, lists and previews its own templates; another client's are
invisible: every probe answers exactly as a name that exists nowhere. The
worker renders the template the send accepted, whatever is uploaded after.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.client_templates import client_template_routes
from mailroom.services.delivery import DeliveryResult, SendItem, deliver_batch
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.fakes import RecordingQueue, ScriptedProvider

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-for-client-templates"
# Ids that differ between two answers that are otherwise the same.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Instance:
    """One API instance: the send function's routes (send, templates) and the admin routes."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        )
        self.queue = RecordingQueue()
        self.provider = ScriptedProvider()
        self.services: Services = bootstrap(
            self.settings, queue=self.queue, providers={"smtp": self.provider}
        )
        self.api = create_api(
            [send_routes(lambda: self.services), client_template_routes(lambda: self.services)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
            client_gate=ClientGate(lambda: self.services),
        )
        self.admin_api = create_api(
            admin_routes(lambda: self.services),
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )

    def _event(
        self, method: str, path: str, body: Any, query: dict[str, str] | None
    ) -> dict[str, Any]:
        event = load_event("status/health")
        event["httpMethod"] = method
        event["path"] = event["resource"] = path
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = (
            {k: [v] for k, v in query.items()} if query else None
        )
        if body is not None:
            with_body(event, body)
            with_headers(event, Content_Type="application/json")
        return event

    def call(
        self,
        client: dict[str, Any],
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """A client request; the raw body, so answers can be compared byte for byte."""
        event = self._event(method, path, body, query)
        with_headers(event, X_Api_Key=client["api_key"], X_Api_Secret=client["api_secret"])
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], response["body"]

    def call_json(
        self, client: dict[str, Any], method: str, path: str, body: Any = None, **query: str
    ) -> tuple[int, Any]:
        status, raw = self.call(client, method, path, body, query or None)
        return status, json.loads(raw)

    def admin(
        self, method: str, path: str, body: Any = None, **query: str
    ) -> tuple[int, dict[str, Any]]:
        event = self._event(method, path, body, query or None)
        with_headers(event, Authorization=f"Bearer {ADMIN_TOKEN}")
        response = self.admin_api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def create_client(self) -> dict[str, Any]:
        status, body = self.admin("POST", "/admin/clients", {"name": f"c-{uuid.uuid4().hex[:8]}"})
        assert status == 201, body
        return body

    def upload(self, client: dict[str, Any], name: str, html: str) -> dict[str, Any]:
        status, body = self.call_json(
            client, "POST", "/v1/templates", {"name": name, "subject": "S", "html": html}
        )
        assert status == 201, body
        return dict(body)

    def send(self, client: dict[str, Any], template: str, **extra: Any) -> tuple[int, str]:
        body = {"template": template, "to": "ada@example.com", "props": {"n": 1}, **extra}
        return self.call(client, "POST", "/v1/send", body)

    def deliver(self, message_id: str) -> str:
        """Run the worker on one message; the HTML part it sent."""
        (outcome,) = deliver_batch(
            self.services.uow(),
            self.services.templates,
            self.services.renderer,
            self.services.providers,
            items=[SendItem(uuid.UUID(message_id))],
            max_attempts=3,
        )
        assert outcome.result is DeliveryResult.SENT, outcome
        parsed = email.message_from_bytes(self.provider.sent[-1].mime, policy=email.policy.default)
        part = parsed.get_body(("html",))
        assert part is not None
        return str(part.get_content())


@pytest.fixture
def instance(database: Database, redis_url: str) -> Instance:
    return Instance(str(database.engine.url.render_as_string(hide_password=False)), redis_url)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _without_ids(raw: str) -> str:
    return _UUID.sub("<id>", raw)


class TestIsolation:
    def test_another_clients_template_answers_exactly_like_one_that_exists_nowhere(
        self, instance: Instance
    ) -> None:
        # GIVEN a name nobody has yet, and what client A is answered when it probes it
        alice, bob = instance.create_client(), instance.create_client()
        owned = _unique("secret")

        def probes(name: str) -> list[tuple[int, str]]:
            return [
                instance.send(alice, name),
                instance.send(alice, name, template_version=1),
                instance.call(alice, "POST", f"/v1/templates/{name}/preview", {}),
                instance.call(alice, "POST", f"/v1/templates/{name}/preview", {"version": 1}),
            ]

        nowhere_answers = probes(owned)
        # WHEN client B uploads a template of that name, and A probes it again: sends with
        # it, pins its version, previews it with and without a version
        instance.upload(bob, owned, "<p>bob's</p>")
        owned_answers = probes(owned)
        # THEN each answer is what it was when the name existed nowhere, byte for byte
        # apart from ids
        assert [status for status, _ in owned_answers] == [422, 422, 404, 404]
        for (status, raw), (other_status, other_raw) in zip(
            owned_answers, nowhere_answers, strict=True
        ):
            assert status == other_status
            assert _without_ids(raw) == _without_ids(other_raw)
        assert json.loads(owned_answers[0][1])["error"]["code"] == "unknown_template"
        assert json.loads(owned_answers[2][1])["error"]["code"] == "template_not_found"
        # AND B itself can preview it
        status, _ = instance.call(bob, "POST", f"/v1/templates/{owned}/preview", {})
        assert status == 200
        # AND A's list does not name it; B's does; nothing was written for A
        status, listed = instance.call_json(alice, "GET", "/v1/templates", limit="100")
        assert status == 200
        assert owned not in {entry["name"] for entry in listed["templates"]}
        _, bobs = instance.call_json(bob, "GET", "/v1/templates", limit="100")
        assert {"name": owned, "kind": "client", "active": True} in [
            {k: e[k] for k in ("name", "kind", "active")} for e in bobs["templates"]
        ]
        assert instance.queue.sent == []

    def test_a_clients_own_template_wins_over_the_shared_one_for_it_alone(
        self, instance: Instance
    ) -> None:
        # GIVEN a shared "promo" uploaded by an operator, and A's own "promo"
        alice, bob = instance.create_client(), instance.create_client()
        name = _unique("promo")
        status, body = instance.admin(
            "POST", "/admin/templates", {"name": name, "subject": "S", "html": "<p>shared</p>"}
        )
        assert (status, body["version"]) == (201, 1), body
        instance.upload(alice, name, "<p>alice's own</p>")
        # WHEN each previews it
        _, for_alice = instance.call_json(alice, "POST", f"/v1/templates/{name}/preview", {})
        _, for_bob = instance.call_json(bob, "POST", f"/v1/templates/{name}/preview", {})
        # THEN A renders its own, B (and anyone else) the shared one
        assert "alice's own" in for_alice["html"]
        assert "shared" in for_bob["html"]
        # AND A's list shows both, its own active and the shared one shadowed
        _, listed = instance.call_json(alice, "GET", "/v1/templates", limit="100")
        mine = [(e["kind"], e["active"]) for e in listed["templates"] if e["name"] == name]
        assert mine == [("client", True), ("shared", False)]
        # AND a send by each is accepted and delivered with its own resolution
        for client, expected in ((alice, "alice's own"), (bob, "shared")):
            status, raw = instance.send(client, name)
            assert status == 202, raw
            assert expected in instance.deliver(json.loads(raw)["id"])

    def test_shared_uploads_and_file_templates_serve_every_client(self, instance: Instance) -> None:
        # GIVEN a shared upload and two clients who own nothing
        clients = [instance.create_client(), instance.create_client()]
        name = _unique("notice")
        instance.admin(
            "POST", "/admin/templates", {"name": name, "subject": "S", "html": "<p>{{ n }}</p>"}
        )
        for client in clients:
            # WHEN each sends with it and with the file template welcome
            shared_status, _ = instance.send(client, name)
            welcome = json.loads(load_event("send/send-welcome")["body"])
            file_status, raw = instance.call(client, "POST", "/v1/send", welcome)
            # THEN both are accepted
            assert (shared_status, file_status) == (202, 202), raw
        # AND a file template's name cannot be taken by a client
        status, body = instance.call_json(
            clients[0], "POST", "/v1/templates", {"name": "welcome", "subject": "s", "html": "x"}
        )
        assert (status, body["error"]["code"]) == (409, "template_read_only")
        # AND the list marks where each comes from
        _, listed = instance.call_json(clients[0], "GET", "/v1/templates", limit="100")
        kinds = {e["name"]: e["kind"] for e in listed["templates"]}
        assert kinds["welcome"] == kinds["receipt"] == "file"
        assert kinds[name] == "shared"

    def test_the_list_is_paged_without_repeats_or_gaps(self, instance: Instance) -> None:
        # GIVEN a client with five templates of its own, besides the files and shared ones
        client = instance.create_client()
        for index in range(5):
            instance.upload(client, f"page-{index}-{uuid.uuid4().hex[:6]}", "<p>x</p>")
        _, whole = instance.call_json(client, "GET", "/v1/templates", limit="100")
        # WHEN it is read two at a time
        seen: list[tuple[str, str]] = []
        cursor: str | None = None
        while True:
            query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            status, page = instance.call_json(client, "GET", "/v1/templates", **query)
            assert status == 200, page
            assert len(page["templates"]) <= 2
            seen += [(e["name"], e["kind"]) for e in page["templates"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        # THEN it is the whole list, in order
        assert seen == [(e["name"], e["kind"]) for e in whole["templates"]]
        assert len(seen) == len(set(seen)) >= 7
        # AND a cursor it did not hand out is a 422
        status, body = instance.call_json(client, "GET", "/v1/templates", cursor="bm9wZQ")
        assert (status, body["error"]["code"]) == (422, "validation_error")


class TestWorker:
    def test_the_worker_renders_the_template_the_send_accepted(
        self, instance: Instance, database: Database
    ) -> None:
        # GIVEN A's message accepted with the shared "offer" (A owned none then)
        alice = instance.create_client()
        name = _unique("offer")
        instance.admin(
            "POST", "/admin/templates", {"name": name, "subject": "S", "html": "<p>shared v1</p>"}
        )
        status, raw = instance.send(alice, name)
        assert status == 202, raw
        message_id = json.loads(raw)["id"]
        with database.engine.connect() as connection:
            pinned = connection.execute(
                text("SELECT template_version, template_shared FROM messages WHERE id = :id"),
                {"id": message_id},
            ).one()
        assert tuple(pinned) == (1, True)
        # WHEN, before the worker runs, A uploads its own "offer" and an operator a shared v2
        instance.upload(alice, name, "<p>alice's own</p>")
        instance.admin(
            "POST", "/admin/templates", {"name": name, "subject": "S", "html": "<p>shared v2</p>"}
        )
        # THEN the worker sends what was accepted: the shared version 1
        html = instance.deliver(message_id)
        assert "shared v1" in html
        # AND A's next send renders its own
        status, raw = instance.send(alice, name)
        assert "alice's own" in instance.deliver(json.loads(raw)["id"])

    def test_a_row_from_before_owners_resolves_for_its_own_client(
        self, instance: Instance, database: Database
    ) -> None:
        # GIVEN B's own "legacy" and a shared "legacy", and A's message with no pin
        alice, bob = instance.create_client(), instance.create_client()
        name = _unique("legacy")
        instance.admin(
            "POST", "/admin/templates", {"name": name, "subject": "S", "html": "<p>shared</p>"}
        )
        instance.upload(bob, name, "<p>bob's</p>")
        status, raw = instance.send(alice, name)
        assert status == 202, raw
        message_id = json.loads(raw)["id"]
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE messages SET template_version = NULL, template_shared = NULL"
                    " WHERE id = :id"
                ),
                {"id": message_id},
            )
        # WHEN the worker renders it THEN it is the shared one, never B's
        assert "shared" in instance.deliver(message_id)


class TestOperators:
    def test_an_operator_uploads_lists_and_previews_for_a_client(
        self, instance: Instance, database: Database
    ) -> None:
        # GIVEN a client, and an operator who uploads a template for it
        client, other = instance.create_client(), instance.create_client()
        name = _unique("ops")
        status, body = instance.admin(
            "POST",
            "/admin/templates",
            {"name": name, "subject": "S", "html": "<p>for the client</p>"},
            client_id=client["id"],
        )
        assert status == 201, body
        # THEN the client can use it and the other client cannot
        _, preview = instance.call_json(client, "POST", f"/v1/templates/{name}/preview", {})
        assert "for the client" in preview["html"]
        status, _ = instance.call_json(other, "POST", f"/v1/templates/{name}/preview", {})
        assert status == 404
        # AND the admin list filtered by client shows exactly its templates, with the owner
        _, listed = instance.admin("GET", "/admin/templates", client_id=client["id"])
        assert [(t["name"], t["client_id"]) for t in listed["templates"]] == [(name, client["id"])]
        # AND the operator previews it as the client sees it; without the client, it is unknown
        status, as_client = instance.admin(
            "POST", f"/admin/templates/{name}/preview", {}, client_id=client["id"]
        )
        assert (status, "for the client" in as_client["html"]) == (200, True)
        status, shared = instance.admin("POST", f"/admin/templates/{name}/preview", {})
        assert (status, shared["error"]["code"]) == (422, "unknown_template")
        # AND an unknown client is refused, with nothing stored
        status, refused = instance.admin(
            "POST",
            "/admin/templates",
            {"name": _unique("nobody"), "subject": "S", "html": "x"},
            client_id=str(uuid.uuid4()),
        )
        assert (status, refused["error"]["code"]) == (422, "validation_error")

    def test_a_client_upload_is_audited_with_its_key(
        self, instance: Instance, database: Database
    ) -> None:
        # GIVEN a client
        client = instance.create_client()
        name = _unique("audited")
        # WHEN it uploads a template
        instance.upload(client, name, "<p>x</p>")
        # THEN the audit log names its key (never the secret), the owner and the version
        with database.engine.connect() as connection:
            actor, after = connection.execute(
                text(
                    "SELECT actor, after FROM admin_audit_log"
                    " WHERE action = 'template.upload' AND target_id = :name"
                ),
                {"name": name},
            ).one()
        assert actor == f"key:{client['api_key']}"
        assert after["client_id"] == client["id"]
        assert after["version"] == 1
        assert client["api_secret"] not in json.dumps(after)
