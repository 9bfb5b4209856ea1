"""Templates through the HTTP API: send-time validation and the admin routes."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from mailroom.adapters.templates import FileTemplateStore, LayeredTemplateStore, TemplateRenderer
from mailroom.bootstrap import bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.services.clients import register_client
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.fakes import (
    DictTemplateStore,
    FakeCredentialVersions,
    FakeQuotaCounter,
    FakeRateLimiter,
    FakeUnitOfWork,
    PlainHasher,
    RecordingQueue,
    ScriptedProvider,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
TOKEN = "template-admin-token-with-plenty-of-entropy-42"
RECEIPT_SAMPLE: dict[str, Any] = json.loads((TEMPLATES / "receipt" / "sample.json").read_text())


class Api:
    def __init__(self) -> None:
        self.uow = FakeUnitOfWork()
        self.queue = RecordingQueue()
        self.uploads = DictTemplateStore()
        self.services = bootstrap(
            Settings(
                templates_dir=TEMPLATES,
                admin_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
            ),
            uow=lambda: self.uow,
            hasher=PlainHasher(),
            queue=self.queue,
            templates=LayeredTemplateStore(FileTemplateStore(TEMPLATES), self.uploads),
            renderer=TemplateRenderer(),
            providers={"smtp": ScriptedProvider()},
            rate_limiter=FakeRateLimiter(),
            quota=FakeQuotaCounter(),
            credential_versions=FakeCredentialVersions(),
            health_probes={},
        )
        self.client = register_client(self.uow, PlainHasher(), name="acme")
        self.app = create_api(
            [send_routes(lambda: self.services), *admin_routes(lambda: self.services)],
            max_request_bytes=lambda: 256 * 1024,
            client_gate=ClientGate(lambda: self.services),
        )

    def _call(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = self.app.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def send(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        event = load_event("send/send-welcome")
        with_headers(event, X_Api_Key=self.client.api_key, X_Api_Secret=self.client.api_secret)
        return self._call(with_body(event, body))

    def admin(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, dict[str, Any]]:
        event = load_event("status/health")
        event["httpMethod"], event["path"], event["resource"] = method, path, path
        with_headers(event, Authorization=f"Bearer {token}" if token else None)
        if body is not None:
            with_body(event, body)
            with_headers(event, Content_Type="application/json")
        return self._call(event)


def _receipt(props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"template": "receipt", "to": "ada@example.com", "props": props, **extra}


class TestSendTimeValidation:
    def test_props_against_the_schema_are_refused_with_every_failing_field(self) -> None:
        # GIVEN receipt props with two schema violations
        api = Api()
        props = copy.deepcopy(RECEIPT_SAMPLE)
        props["items"][3]["quantity"] = 0
        del props["order"]["total"]
        # WHEN they are sent
        status, body = api.send(_receipt(props))
        # THEN 422 names both fields, and nothing was written or queued
        assert status == 422
        assert body["error"]["code"] == "invalid_props"
        fields = [detail["field"] for detail in body["error"]["details"]]
        assert fields == ["props.items.3.quantity", "props.order.total"]
        assert api.uow.messages.rows == {}
        assert api.queue.sent == []

    def test_a_prop_the_template_uses_but_the_request_lacks_is_named(self) -> None:
        # GIVEN the welcome template (no schema) without its first_name prop
        api = Api()
        props = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())
        del props["first_name"]
        status, body = api.send({"template": "welcome", "to": "ada@example.com", "props": props})
        # THEN StrictUndefined's error is a clear 422, before anything is queued
        assert status == 422
        assert body["error"]["code"] == "missing_prop"
        assert "'first_name' is undefined" in body["error"]["message"]
        assert body["error"]["details"][0]["field"] == "props.first_name"
        assert api.queue.sent == []

    def test_a_pinned_version_is_stored_with_the_message(self) -> None:
        api = Api()
        for word in ("first", "second"):
            status, _ = api.admin(
                "POST", "/admin/templates", {"name": "promo", "subject": "s", "html": word}
            )
            assert status == 201
        status, body = api.send(
            {"template": "promo", "to": "ada@example.com", "template_version": 1}
        )
        assert status == 202
        assert api.uow.messages.rows[next(iter(api.uow.messages.rows))].template_version == 1
        status, body = api.send(
            {"template": "promo", "to": "ada@example.com", "template_version": 3}
        )
        assert (status, body["error"]["code"]) == (422, "unknown_template")


class TestAdminRoutes:
    def test_upload_answers_the_new_version_and_lint_warnings(self) -> None:
        api = Api()
        upload = {"name": "promo", "subject": "Hi {{ name }}", "html": "<img src='x'>{{ name }}"}
        first = api.admin("POST", "/admin/templates", {**upload, "sample": {"name": "Ada"}})
        second = api.admin("POST", "/admin/templates", upload)
        assert first[0] == second[0] == 201
        assert (first[1]["name"], first[1]["version"], second[1]["version"]) == ("promo", 1, 2)
        codes = [warning["code"] for warning in first[1]["warnings"]]
        assert codes == ["no_text_part", "image_without_alt"]

    def test_syntax_errors_answer_422_with_part_and_line(self) -> None:
        api = Api()
        html = "<p>fine</p>\n<p>{% for x in %}</p>"
        status, body = api.admin(
            "POST", "/admin/templates", {"name": "broken", "subject": "s", "html": html}
        )
        assert status == 422
        assert body["error"]["code"] == "template_syntax_error"
        assert body["error"]["details"][0]["field"] == "html"
        assert body["error"]["details"][0]["line"] == 2
        assert "html line 2" in body["error"]["message"]
        assert api.uploads.uploads == {}

    def test_a_file_template_is_read_only(self) -> None:
        status, body = Api().admin(
            "POST", "/admin/templates", {"name": "welcome", "subject": "s", "html": "x"}
        )
        assert (status, body["error"]["code"]) == (409, "template_read_only")

    def test_a_sample_that_breaks_the_schema_is_refused(self) -> None:
        status, body = Api().admin(
            "POST",
            "/admin/templates",
            {
                "name": "promo",
                "subject": "s",
                "html": "{{ n }}",
                "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
                "sample": {"n": "three"},
            },
        )
        assert (status, body["error"]["code"]) == (422, "invalid_props")

    def test_list_shows_file_templates_and_every_uploaded_version(self) -> None:
        api = Api()
        for _ in range(2):
            api.admin("POST", "/admin/templates", {"name": "promo", "subject": "s", "html": "x"})
        status, body = api.admin("GET", "/admin/templates")
        assert status == 200
        listed = {t["name"]: t for t in body["templates"]}
        assert listed["welcome"] == {
            "name": "welcome",
            "kind": "file",
            "client_id": None,
            "versions": [],
        }
        assert listed["receipt"]["kind"] == "file"
        assert [v["version"] for v in listed["promo"]["versions"]] == [1, 2]

    def test_preview_renders_the_sample_and_lints_it(self) -> None:
        status, body = Api().admin("POST", "/admin/templates/receipt/preview", {})
        assert status == 200
        assert body["subject"].startswith("Your Northwind Outfitters receipt")
        assert "Merino crew sweater" in body["html"]
        assert "Total: 1034.85 EUR" in body["text"]
        assert body["warnings"] == []

    def test_preview_with_given_props_and_a_version(self) -> None:
        api = Api()
        for html in ("one {{ n }}", "two {{ n }}"):
            api.admin("POST", "/admin/templates", {"name": "promo", "subject": "s", "html": html})
        status, body = api.admin(
            "POST", "/admin/templates/promo/preview", {"version": 1, "props": {"n": 7}}
        )
        assert status == 200
        assert (body["version"], body["text"]) == (1, "one 7\n")

    def test_an_upload_marked_bulk_says_so_per_version(self) -> None:
        # GIVEN version 1 uploaded as bulk mail and version 2 without the flag
        api = Api()
        status, first = api.admin(
            "POST",
            "/admin/templates",
            {"name": "offers", "subject": "s", "html": "x", "bulk": True},
        )
        assert (status, first["bulk"]) == (201, True)
        _, second = api.admin(
            "POST", "/admin/templates", {"name": "offers", "subject": "s", "html": "y"}
        )
        assert second["bulk"] is False
        # THEN a preview of each version says which is bulk
        _, one = api.admin("POST", "/admin/templates/offers/preview", {"version": 1})
        _, two = api.admin("POST", "/admin/templates/offers/preview", {"version": 2})
        assert (one["bulk"], two["bulk"]) == (True, False)
        # AND a flag that is not a boolean is refused
        status, _ = api.admin(
            "POST",
            "/admin/templates",
            {"name": "offers", "subject": "s", "html": "x", "bulk": "maybe"},
        )
        assert status == 422

    def test_every_template_route_needs_the_admin_token(self) -> None:
        api = Api()
        for method, path in [
            ("GET", "/admin/templates"),
            ("POST", "/admin/templates"),
            ("POST", "/admin/templates/receipt/preview"),
        ]:
            body = {"name": "x", "subject": "s", "html": "x"} if path.endswith("templates") else {}
            status, answer = api.admin(method, path, body if method == "POST" else None, None)
            assert (status, answer["error"]["code"]) == (401, "unauthorized"), path
