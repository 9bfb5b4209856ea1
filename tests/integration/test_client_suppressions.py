"""/v1/suppressions on real PostgreSQL and Redis: each client's own list, imports, exports."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.suppression_files import MAX_IMPORT_ROWS
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.client_suppressions import client_suppression_routes
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.fakes import RecordingQueue, ScriptedProvider

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-with-enough-entropy"
SAMPLE_PROPS = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())
CSV = "text/csv"
JSONL = "application/x-ndjson"


class Answer:
    def __init__(self, response: dict[str, Any]) -> None:
        self.status: int = response["statusCode"]
        self.text: str = response.get("body") or ""
        self.headers = {
            name.lower(): values[-1]
            for name, values in (response.get("multiValueHeaders") or {}).items()
        }
        self.headers.update(
            {name.lower(): str(value) for name, value in (response.get("headers") or {}).items()}
        )

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def code(self) -> str:
        return str(self.json()["error"]["code"])


class Api:
    """The status function's routes (with /v1/suppressions) and the admin API, on real services."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        )
        self.services: Services = bootstrap(
            settings, queue=RecordingQueue(), providers={"smtp": ScriptedProvider()}
        )
        self.client_api = create_api(
            [
                send_routes(lambda: self.services),
                status_routes(lambda: self.services),
                client_suppression_routes(lambda: self.services),
            ],
            max_request_bytes=lambda: settings.max_request_bytes,
            client_gate=ClientGate(lambda: self.services),
        )
        self.admin_api = create_api(
            admin_routes(lambda: self.services),
            max_request_bytes=lambda: settings.max_request_bytes,
        )

    @staticmethod
    def _event(
        method: str,
        path: str,
        *,
        query: dict[str, str] | None,
        body: Any,
        content_type: str | None,
        base64_body: bytes | None = None,
    ) -> dict[str, Any]:
        event = load_event("status/health")
        event["httpMethod"] = method
        event["path"] = event["resource"] = path
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = (
            {k: [v] for k, v in query.items()} if query else None
        )
        event["requestContext"]["identity"]["sourceIp"] = "203.0.113.9"
        if base64_body is not None:
            event["body"] = base64.b64encode(base64_body).decode()
            event["isBase64Encoded"] = True
        elif body is not None:
            with_body(event, body)
        if content_type is not None:
            with_headers(event, Content_Type=content_type)
        return event

    def client(
        self,
        who: dict[str, Any],
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        base64_body: bytes | None = None,
    ) -> Answer:
        if body is not None and content_type is None and not isinstance(body, str):
            content_type = "application/json"
        event = self._event(
            method, path, query=query, body=body, content_type=content_type, base64_body=base64_body
        )
        with_headers(event, X_Api_Key=who["api_key"], X_Api_Secret=who["api_secret"])
        return Answer(self.client_api.resolve(event, FakeLambdaContext()))

    def admin(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Answer:
        if body is not None and content_type is None and not isinstance(body, str):
            content_type = "application/json"
        event = self._event(method, path, query=query, body=body, content_type=content_type)
        with_headers(event, Authorization=f"Bearer {ADMIN_TOKEN}")
        return Answer(self.admin_api.resolve(event, FakeLambdaContext()))

    def new_client(self) -> dict[str, Any]:
        answer = self.admin("POST", "/admin/clients", body={"name": f"c-{uuid.uuid4().hex[:8]}"})
        assert answer.status == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def listed(self, who: dict[str, Any], **query: str) -> list[dict[str, Any]]:
        answer = self.client(who, "GET", "/v1/suppressions", query=query or None)
        assert answer.status == 200, answer.text
        entries: list[dict[str, Any]] = answer.json()["suppressions"]
        return entries

    def send(self, who: dict[str, Any], to: str) -> Answer:
        body = {"template": "welcome", "to": to, "props": SAMPLE_PROPS}
        return self.client(who, "POST", "/v1/send", body=body)


@pytest.fixture
def api(database: Database, redis_url: str) -> Api:
    return Api(str(database.engine.url.render_as_string(hide_password=False)), redis_url)


def _audit(database: Database, action: str) -> list[dict[str, Any]]:
    with database.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT actor, target_type, target_id, after, source_ip FROM admin_audit_log "
                "WHERE action = :action ORDER BY id"
            ),
            {"action": action},
        ).mappings()
        return [dict(row) for row in rows]


def _rows(database: Database) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM suppressions")).scalar_one())


class TestOwnership:
    def test_a_clients_entries_are_invisible_to_another_and_global_ones_show_bare(
        self, api: Api
    ) -> None:
        a, b = api.new_client(), api.new_client()
        # GIVEN client A suppresses an address with a note, and an operator suppresses another
        added = api.client(
            a,
            "POST",
            "/v1/suppressions",
            body={"address": "Ada@Example.com", "reason": "unsubscribe", "note": "A's secret"},
        )
        assert added.status == 201, added.text
        assert added.json()["address"] == "ada@example.com"
        operator = api.admin(
            "POST",
            "/admin/suppressions",
            body={"address": "global@example.com", "reason": "complaint", "note": "op note"},
        )
        assert operator.status == 201
        # WHEN each client lists its suppressions
        seen_by_a = api.listed(a)
        seen_by_b = api.listed(b)
        # THEN A sees its own entry in full and the global one as "suppressed (global)", bare
        own = next(e for e in seen_by_a if e["address"] == "ada@example.com")
        assert (own["status"], own["reason"], own["note"], own["source"]) == (
            "suppressed",
            "unsubscribe",
            "A's secret",
            "api",
        )
        glob = next(e for e in seen_by_a if e["address"] == "global@example.com")
        assert glob == {
            "address": "global@example.com",
            "scope": "global",
            "status": "suppressed (global)",
            "reason": None,
            "note": None,
            "source": None,
            "created_at": None,
            "updated_at": None,
            "expires_at": None,
        }
        # AND B sees the global entry but nothing of A's, not even by address or in its export
        assert [e["address"] for e in seen_by_b] == ["global@example.com"]
        assert api.listed(b, address="ada@example.com") == []
        assert "ada@example.com" not in api.client(b, "GET", "/v1/suppressions/export").text
        # AND a reason filter never reveals a global entry's reason
        assert api.listed(a, reason="complaint") == []
        assert [e["address"] for e in api.listed(a, reason="unsubscribe")] == ["ada@example.com"]

    def test_a_client_cannot_remove_a_global_entry_or_another_clients(
        self, api: Api, database: Database
    ) -> None:
        a, b = api.new_client(), api.new_client()
        api.admin("POST", "/admin/suppressions", body={"address": "everyone@example.com"})
        api.client(b, "POST", "/v1/suppressions", body={"address": "bs@example.com"})
        before = _rows(database)
        # WHEN A tries to lift the global entry THEN it is refused: an operator's to lift
        refused = api.client(
            a, "DELETE", "/v1/suppressions", query={"address": "everyone@example.com"}
        )
        assert (refused.status, refused.code) == (409, "suppression_global")
        # WHEN A tries to lift B's entry THEN it is not found: A cannot tell it exists
        absent = api.client(a, "DELETE", "/v1/suppressions", query={"address": "bs@example.com"})
        assert (absent.status, absent.code) == (404, "suppression_not_found")
        nowhere = api.client(
            a, "DELETE", "/v1/suppressions", query={"address": "nobody@example.com"}
        )
        assert (nowhere.status, nowhere.code) == (404, "suppression_not_found")
        # AND nothing was removed
        assert _rows(database) == before
        # WHEN A has its own entry for a globally suppressed address and lifts it
        api.client(a, "POST", "/v1/suppressions", body={"address": "everyone@example.com"})
        lifted = api.client(
            a, "DELETE", "/v1/suppressions", query={"address": "everyone@example.com"}
        )
        # THEN its entry goes, and the answer says the global one still applies
        assert lifted.status == 200
        assert lifted.json() == {"removed": 1, "globally_suppressed": True}
        assert _rows(database) == before

    def test_an_address_with_slash_plus_and_percent_is_removed_through_the_query(
        self, api: Api
    ) -> None:
        a = api.new_client()
        address = "a/b+c%d@bücher.example"
        assert api.client(a, "POST", "/v1/suppressions", body={"address": address}).status == 201
        removed = api.client(a, "DELETE", "/v1/suppressions", query={"address": address})
        assert removed.status == 200, removed.text
        assert api.listed(a) == []

    def test_punycode_and_unicode_spellings_are_one_entry(self, api: Api) -> None:
        a = api.new_client()
        # GIVEN A adds an address with a punycode domain, then the same one in Unicode
        first = api.client(
            a, "POST", "/v1/suppressions", body={"address": "ada@xn--bcher-kva.example"}
        )
        second = api.client(a, "POST", "/v1/suppressions", body={"address": "ada@BÜCHER.example"})
        assert (first.status, second.status) == (201, 201)
        # THEN there is one entry, found by either spelling
        assert [e["address"] for e in api.listed(a)] == ["ada@bücher.example"]
        assert len(api.listed(a, address="ada@xn--bcher-kva.example")) == 1
        # AND an import naming it both ways is one entry too
        report = api.client(
            a,
            "POST",
            "/v1/suppressions/import",
            body="email\nbob@xn--bcher-kva.example\nBob@bücher.example\n",
            content_type=CSV,
        ).json()
        assert (report["created"], report["duplicates"]) == (1, 1)
        assert len(api.listed(a)) == 2
        # AND removing it with the punycode spelling removes it
        removed = api.client(
            a, "DELETE", "/v1/suppressions", query={"address": "ada@xn--bcher-kva.example"}
        )
        assert removed.json()["removed"] == 1

    def test_the_send_path_honours_an_entry_added_through_v1(self, api: Api) -> None:
        a, b = api.new_client(), api.new_client()
        # GIVEN A suppresses an address through /v1
        api.client(a, "POST", "/v1/suppressions", body={"address": "stop@example.com"})
        # WHEN A sends to it THEN it is refused as suppressed
        refused = api.send(a, "stop@example.com")
        assert (refused.status, refused.code) == (422, "suppressed")
        # AND B's mail to it is not affected
        assert api.send(b, "stop@example.com").status == 202

    def test_changes_are_audited_with_the_key_and_source_address(
        self, api: Api, database: Database
    ) -> None:
        a = api.new_client()
        api.client(a, "POST", "/v1/suppressions", body={"address": "x@example.com"})
        api.client(a, "DELETE", "/v1/suppressions", query={"address": "x@example.com"})
        actor = f"key:{a['api_key']}"
        for action in ("suppression.add", "suppression.remove"):
            (row,) = _audit(database, action)
            assert (row["actor"], row["target_id"], row["source_ip"]) == (
                actor,
                "x@example.com",
                "203.0.113.9",
            )
            assert a["api_secret"] not in json.dumps(row, default=str)

    def test_an_address_longer_than_128_characters_is_added_removed_and_audited(
        self, api: Api, database: Database
    ) -> None:
        a = api.new_client()
        # GIVEN a valid address of 200 characters (a 64-character local part, long labels)
        domain = ".".join(["d" * 60, "e" * 60, "f" * 10, "example"])
        address = f"{'l' * 64}@{domain}"
        assert len(address) > 128
        # WHEN A adds and removes it THEN both succeed and both are in the audit log
        assert api.client(a, "POST", "/v1/suppressions", body={"address": address}).status == 201
        removed = api.client(a, "DELETE", "/v1/suppressions", query={"address": address})
        assert removed.status == 200, removed.text
        for action in ("suppression.add", "suppression.remove"):
            assert [row["target_id"] for row in _audit(database, action)] == [address]


class TestImport:
    CSV_FILE = (
        "email,reason,expires_at,note\r\n"
        "one@example.com,hard_bounce,,bounced\r\n"
        "not-an-address,manual,,\r\n"
        "two@example.com,unsubscribe,2099-01-01T00:00:00Z,\r\n"
        "three@example.com,sneezed,,\r\n"
        "\r\n"
        '"Four <four@example.com>",,,"a note, with a comma"\r\n'
        "five@example.com,manual,2001-01-01T00:00:00Z,\r\n"
    )

    def test_a_csv_with_bad_lines_imports_the_rest_and_names_each_bad_line(
        self, api: Api, database: Database
    ) -> None:
        a = api.new_client()
        # WHEN A imports a CSV with three bad lines
        answer = api.client(
            a, "POST", "/v1/suppressions/import", body=self.CSV_FILE, content_type=CSV
        )
        # THEN the good lines are in, and each bad one is reported by its line number
        assert answer.status == 200, answer.text
        report = answer.json()
        assert {k: report[k] for k in ("received", "created", "updated", "failed")} == {
            "received": 6,
            "created": 3,
            "updated": 0,
            "failed": 3,
        }
        assert [(e["line"], e.get("field")) for e in report["errors"]] == [
            (3, "address"),
            (5, "reason"),
            (8, "expires_at"),
        ]
        listed = {e["address"]: e for e in api.listed(a)}
        assert set(listed) == {"one@example.com", "two@example.com", "four@example.com"}
        assert listed["four@example.com"]["note"] == "a note, with a comma"
        assert listed["two@example.com"]["expires_at"].startswith("2099-01-01")
        # AND one audit row holds the counts, with the key as the actor
        (row,) = _audit(database, "suppression.import")
        assert row["actor"] == f"key:{a['api_key']}"
        assert (row["target_type"], row["target_id"]) == ("suppression_list", a["id"])
        assert {k: row["after"][k] for k in ("created", "failed", "format")} == {
            "created": 3,
            "failed": 3,
            "format": "csv",
        }
        # WHEN the same file is imported again
        again = api.client(
            a, "POST", "/v1/suppressions/import", body=self.CSV_FILE, content_type=CSV
        ).json()
        # THEN nothing new: the same entries, updated in place
        assert (again["created"], again["updated"], again["failed"]) == (0, 3, 3)
        assert {e["address"]: e["reason"] for e in api.listed(a)} == {
            k: v["reason"] for k, v in listed.items()
        }

    def test_jsonl_with_bad_lines_imports_the_rest(self, api: Api) -> None:
        a = api.new_client()
        lines = [
            json.dumps({"address": "j1@example.com", "reason": "complaint"}),
            "{not json",
            json.dumps(["an", "array"]),
            json.dumps({"email": "j2@example.com", "note": "via email key"}),
            json.dumps({"address": "j3@example.com", "note": "NUL \u0000 here"}),
            json.dumps({"address": 42}),
            "",
            json.dumps({"address": "j4@example.com", "ignored": True}),
        ]
        answer = api.client(
            a, "POST", "/v1/suppressions/import", body="\n".join(lines), content_type=JSONL
        )
        assert answer.status == 200, answer.text
        report = answer.json()
        assert [e["line"] for e in report["errors"]] == [2, 3, 5, 6]
        assert report["created"] == 3
        assert {e["address"] for e in api.listed(a)} == {
            "j1@example.com",
            "j2@example.com",
            "j4@example.com",
        }

    def test_atomic_refuses_the_whole_file_for_one_bad_line(
        self, api: Api, database: Database
    ) -> None:
        a = api.new_client()
        before = _rows(database)
        answer = api.client(
            a,
            "POST",
            "/v1/suppressions/import",
            query={"atomic": "true"},
            body=self.CSV_FILE,
            content_type=CSV,
        )
        assert (answer.status, answer.code) == (422, "validation_error")
        assert [d["line"] for d in answer.json()["error"]["details"]] == [3, 5, 8]
        assert _rows(database) == before
        assert _audit(database, "suppression.import") == []

    def test_an_export_imports_back_as_it_is(self, api: Api) -> None:
        a, c = api.new_client(), api.new_client()
        api.client(a, "POST", "/v1/suppressions/import", body=self.CSV_FILE, content_type=CSV)
        api.admin("POST", "/admin/suppressions", body={"address": "g@example.com"})
        for form, media in (("csv", CSV), ("jsonl", JSONL)):
            # WHEN A's list is exported
            exported = api.client(a, "GET", "/v1/suppressions/export", query={"format": form})
            assert exported.status == 200
            assert exported.headers["content-type"] == media
            assert "x-next-cursor" not in exported.headers
            # AND imported into another client's list
            report = api.client(
                c, "POST", "/v1/suppressions/import", body=exported.text, content_type=media
            ).json()
            assert report["failed"] == 0, report
            # THEN the two lists hold the same entries (the global one was never exported)
            assert _entries(api, c) == _entries(api, a)
            assert "g@example.com" not in exported.text

    def test_a_long_export_pages_with_a_cursor(self, api: Api) -> None:
        a = api.new_client()
        body = "address\n" + "".join(f"p{i}@example.com\n" for i in range(25))
        api.client(a, "POST", "/v1/suppressions/import", body=body, content_type=CSV)
        from mailroom.services import suppression as suppressions

        limit = suppressions.MAX_EXPORT_ROWS
        suppressions.MAX_EXPORT_ROWS = 10
        try:
            seen: list[str] = []
            query: dict[str, str] = {"format": "csv"}
            while True:
                page = api.client(a, "GET", "/v1/suppressions/export", query=query)
                rows = list(csv.DictReader(io.StringIO(page.text)))
                seen += [row["address"] for row in rows]
                cursor = page.headers.get("x-next-cursor")
                if not cursor:
                    break
                query = {"format": "csv", "cursor": cursor}
        finally:
            suppressions.MAX_EXPORT_ROWS = limit
        assert seen == [f"p{i}@example.com" for i in range(25)]


def _entries(api: Api, who: dict[str, Any]) -> list[tuple[Any, ...]]:
    keep = ("address", "reason", "note", "expires_at")
    return sorted(tuple(e[k] for k in keep) for e in api.listed(who) if e["scope"] == "client")


class TestImportBody:
    @pytest.mark.parametrize(
        ("content_type", "body", "status", "code"),
        [
            ("application/json", {"address": "a@example.com"}, 415, "unsupported_media_type"),
            ("text/plain", "address\na@example.com\n", 415, "unsupported_media_type"),
            (None, "address\na@example.com\n", 415, "unsupported_media_type"),
            (CSV, "address\na\u0000b@example.com\n", 422, "unsupported_value"),
            (CSV, "note\nno address column\n", 422, "validation_error"),
            (CSV, "", 422, "validation_error"),
        ],
    )
    def test_an_unreadable_body_is_refused_and_writes_nothing(
        self,
        api: Api,
        database: Database,
        content_type: str | None,
        body: Any,
        status: int,
        code: str,
    ) -> None:
        a = api.new_client()
        answer = api.client(
            a, "POST", "/v1/suppressions/import", body=body, content_type=content_type
        )
        assert (answer.status, answer.code) == (status, code), answer.text
        assert _rows(database) == 0

    def test_invalid_utf8_is_malformed_body(self, api: Api, database: Database) -> None:
        a = api.new_client()
        answer = api.client(
            a,
            "POST",
            "/v1/suppressions/import",
            base64_body=b"address\n\xff\xfe@example.com\n",
            content_type=CSV,
        )
        assert (answer.status, answer.code) == (400, "malformed_body")
        assert _rows(database) == 0

    def test_a_declared_charset_is_decoded(self, api: Api) -> None:
        a = api.new_client()
        answer = api.client(
            a,
            "POST",
            "/v1/suppressions/import",
            base64_body="address,note\nl@example.com,café\n".encode("latin-1"),
            content_type="text/csv; charset=ISO-8859-1",
        )
        assert answer.status == 200, answer.text
        assert api.listed(a)[0]["note"] == "café"

    def test_too_many_rows_or_bytes_are_413_and_write_nothing(
        self, api: Api, database: Database
    ) -> None:
        a = api.new_client()
        rows = "address\n" + "".join(f"r{i}@example.com\n" for i in range(MAX_IMPORT_ROWS + 1))
        too_many = api.client(a, "POST", "/v1/suppressions/import", body=rows, content_type=CSV)
        assert (too_many.status, too_many.code) == (413, "payload_too_large")
        assert too_many.json()["error"]["details"] == [{"limit_rows": MAX_IMPORT_ROWS}]
        big = "address,note\n" + f"b@example.com,{'x' * 400}\n" * 3000
        too_big = api.client(a, "POST", "/v1/suppressions/import", body=big, content_type=CSV)
        assert (too_big.status, too_big.code) == (413, "payload_too_large")
        assert _rows(database) == 0


class TestAdminBulk:
    def test_an_operator_imports_into_a_client_or_the_global_list_and_exports(
        self, api: Api, database: Database
    ) -> None:
        a = api.new_client()
        body = "address,reason\nop1@example.com,complaint\nop2@example.com,\n"
        into_a = api.admin(
            "POST",
            "/admin/suppressions/import",
            query={"client_id": a["id"]},
            body=body,
            content_type=CSV,
        )
        assert into_a.status == 200, into_a.text
        assert into_a.json()["created"] == 2
        into_global = api.admin(
            "POST",
            "/admin/suppressions/import",
            body=json.dumps({"address": "op3@example.com"}) + "\n",
            content_type=JSONL,
        )
        assert into_global.json()["created"] == 1
        # THEN A sees its two in full and the global one bare
        statuses = {e["address"]: e["status"] for e in api.listed(a)}
        assert statuses == {
            "op1@example.com": "suppressed",
            "op2@example.com": "suppressed",
            "op3@example.com": "suppressed (global)",
        }
        # AND the audit rows name the operator, one per import
        rows = _audit(database, "suppression.import")
        assert [row["target_id"] for row in rows] == [a["id"], "global"]
        assert all(row["actor"].startswith("admin:") for row in rows)
        # AND the export of the global list holds only the global entry
        exported = api.admin("GET", "/admin/suppressions/export", query={"scope": "global"})
        assert [row["address"] for row in csv.DictReader(io.StringIO(exported.text))] == [
            "op3@example.com"
        ]
        # AND an unknown client is refused, writing nothing
        unknown = api.admin(
            "POST",
            "/admin/suppressions/import",
            query={"client_id": str(uuid.uuid4())},
            body=body,
            content_type=CSV,
        )
        assert (unknown.status, unknown.code) == (422, "validation_error")
        assert len(_audit(database, "suppression.import")) == 2
