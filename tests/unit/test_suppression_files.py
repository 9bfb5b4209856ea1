"""Suppression files (domain/suppression_files.py), text bodies (request_body.TextBody), scopes."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from mailroom.domain.errors import (
    InvalidRequest,
    PayloadTooLarge,
    UnreadableBody,
    UnsupportedMediaType,
    UnsupportedValue,
)
from mailroom.domain.feedback import Suppression, SuppressionReason
from mailroom.domain.model import Client
from mailroom.domain.suppression_files import (
    CLIENT_EXPORT_FIELDS,
    IMPORT_MEDIA_TYPES,
    MAX_IMPORT_ROWS,
    FileFormat,
    export_header,
    export_line,
    parse_import,
)
from mailroom.domain.tenancy import Caller, Scope
from mailroom.entrypoints.api import openapi_json
from mailroom.entrypoints.client_suppressions import client_view
from mailroom.entrypoints.request_body import TextBody, prepare_event
from mailroom.entrypoints.suppression_bulk import IMPORT_BODY

NOW = datetime(2026, 12, 6, tzinfo=UTC)


class TestParseImport:
    def test_each_csv_record_is_numbered_by_the_line_it_starts_on(self) -> None:
        # GIVEN a CSV with a BOM, upper-case headers, a quoted note over two lines and bad rows
        text = (
            "\ufeffEMAIL,Reason,Note\n"
            'a@example.com,,"two\nlines"\n'
            "bad,,\n"
            "c@example.com,COMPLAINT,\n"
        )
        # WHEN it is parsed
        parsed = parse_import(text, FileFormat.CSV, now=NOW)
        # THEN the good rows are kept and the bad one is named by its own line (4, not 3)
        assert [(row.line, row.address, row.reason) for row in parsed.rows] == [
            (2, "a@example.com", SuppressionReason.MANUAL),
            (5, "c@example.com", SuppressionReason.COMPLAINT),
        ]
        assert parsed.rows[0].note == "two\nlines"
        assert [(error.line, error.field) for error in parsed.errors] == [(4, "address")]
        assert parsed.received == 3

    def test_the_last_line_naming_an_address_wins_whatever_its_spelling(self) -> None:
        text = "address,note\nAda@xn--bcher-kva.example,first\nada@BÜCHER.example,second\n"
        parsed = parse_import(text, FileFormat.CSV, now=NOW)
        assert [(row.address, row.note) for row in parsed.rows] == [
            ("ada@bücher.example", "second")
        ]
        assert parsed.duplicates == 1

    def test_a_csv_without_an_address_column_is_refused_as_a_whole(self) -> None:
        with pytest.raises(InvalidRequest):
            parse_import("note,reason\nx,manual\n", FileFormat.CSV, now=NOW)

    def test_jsonl_lines_split_on_newlines_only(self) -> None:
        # U+2028 is a line break to str.splitlines but legal inside a JSON string.
        lines = [
            json.dumps({"address": "a@example.com", "note": "x\u2028y"}, ensure_ascii=False),
            '{"address": "b@example.com", "note": "\\ud800"}',
            '"a string"',
        ]
        parsed = parse_import("\r\n".join(lines), FileFormat.JSONL, now=NOW)
        assert [row.note for row in parsed.rows] == ["x\u2028y"]
        assert [error.line for error in parsed.errors] == [2, 3]

    @pytest.mark.parametrize(
        ("expires_at", "field"),
        [("2026-01-01T00:00:00Z", "expires_at"), ("2027-01-01T00:00:00", "expires_at")],
    )
    def test_an_expiry_in_the_past_or_without_offset_is_a_bad_line(
        self, expires_at: str, field: str
    ) -> None:
        parsed = parse_import(
            f"address,expires_at\na@example.com,{expires_at}\n", FileFormat.CSV, now=NOW
        )
        assert (parsed.rows, [e.field for e in parsed.errors]) == ([], [field])

    def test_more_rows_than_the_limit_is_413(self) -> None:
        text = "address\n" + "a@example.com\n" * (MAX_IMPORT_ROWS + 1)
        with pytest.raises(PayloadTooLarge):
            parse_import(text, FileFormat.CSV, now=NOW)

    @pytest.mark.parametrize("form", list(FileFormat))
    def test_an_export_parses_back_to_the_same_entries(self, form: FileFormat) -> None:
        entries = [
            Suppression(
                address="ada@bücher.example",
                reason=SuppressionReason.UNSUBSCRIBE,
                client_id=uuid.uuid4(),
                expires_at=datetime(2030, 1, 1, tzinfo=UTC),
                note='with "quotes", commas\nand lines',
            ),
            Suppression(address="b@example.com", reason=SuppressionReason.HARD_BOUNCE),
        ]
        text = export_header(form, CLIENT_EXPORT_FIELDS) + "".join(
            export_line(entry, form, CLIENT_EXPORT_FIELDS) for entry in entries
        )
        parsed = parse_import(text, form, now=NOW)
        assert parsed.errors == []
        assert [(r.address, r.reason, r.expires_at, r.note) for r in parsed.rows] == [
            (e.address, e.reason, e.expires_at, e.note) for e in entries
        ]


def _event(body: str | None, content_type: str | None, *, b64: bool = False) -> dict[str, Any]:
    headers = {"Content-Type": content_type} if content_type else {}
    return {
        "path": "/v1/suppressions/import",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "body": base64.b64encode(body.encode("latin-1")).decode() if b64 and body else body,
        "isBase64Encoded": b64,
    }


SMALL = TextBody(media_types=IMPORT_MEDIA_TYPES, max_bytes=64, description="test")


class TestTextBody:
    def test_a_declared_media_type_is_passed_on_as_text(self) -> None:
        event = prepare_event(
            _event("address\na@b.example\n", "Text/CSV; charset=utf-8"), 16, lambda: SMALL
        )
        # THEN the route's own limit applies (not the JSON one) and the type is plain
        assert event["body"] == "address\na@b.example\n"
        assert event["headers"]["Content-Type"] == "text/csv"

    def test_json_requests_never_look_the_declaration_up(self) -> None:
        def never() -> TextBody:
            raise AssertionError("looked up for a JSON body")

        prepare_event(_event('{"a": 1}', "application/json"), 1024, never)

    @pytest.mark.parametrize(
        ("body", "content_type", "b64", "error"),
        [
            ("address\n", "text/plain", False, UnsupportedMediaType),
            ("address\n", None, False, UnsupportedMediaType),
            ("x" * 65, "text/csv", False, PayloadTooLarge),
            ("address\na\x00@b\n", "text/csv", False, UnsupportedValue),
            ("address\n\xff\n", "text/csv", True, UnreadableBody),
            ("address\n\ud800\n", "application/x-ndjson", False, UnreadableBody),
        ],
    )
    def test_undeclared_oversize_or_unreadable_bodies_are_refused(
        self, body: str, content_type: str | None, b64: bool, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            prepare_event(_event(body, content_type, b64=b64), 1024, lambda: SMALL)

    def test_without_a_declaration_other_media_types_stay_refused(self) -> None:
        with pytest.raises(UnsupportedMediaType):
            prepare_event(_event("address\n", "text/csv"), 1024)

    def test_the_declaration_round_trips_through_the_route_extensions(self) -> None:
        assert TextBody.of_route(IMPORT_BODY.openapi_extensions()) == IMPORT_BODY
        assert TextBody.of_route({}) is None


def _client() -> Client:
    return Client(
        id=uuid.uuid4(),
        name="acme",
        api_key_prefix="mr_live_" + "0" * 24,
        rate_limit=60,
        quota_limit=100,
    )


class TestScope:
    def test_only_suppression_manage_or_admin_may_manage_suppressions(self) -> None:
        everything_else = frozenset(
            scope for scope in Scope if scope not in (Scope.SUPPRESSION_MANAGE, Scope.ADMIN)
        )
        assert not Caller(_client(), "k", everything_else).allows(Scope.SUPPRESSION_MANAGE)
        assert Caller(_client(), "k", frozenset({Scope.SUPPRESSION_MANAGE})).allows(
            Scope.SUPPRESSION_MANAGE
        )

    def test_the_document_declares_suppression_manage_on_every_suppression_route(self) -> None:
        document = json.loads(openapi_json(lambda: None))  # type: ignore[arg-type,return-value]
        operations = {
            (path, method): operation
            for path, item in document["paths"].items()
            if path.startswith("/v1/suppressions")
            for method, operation in item.items()
        }
        assert set(operations) == {
            ("/v1/suppressions", "get"),
            ("/v1/suppressions", "post"),
            ("/v1/suppressions", "delete"),
            ("/v1/suppressions/import", "post"),
            ("/v1/suppressions/export", "get"),
        }
        for operation in operations.values():
            assert operation["security"] == [
                {"apiKey": ["suppression:manage"], "apiSecret": ["suppression:manage"]},
                {"clientToken": ["suppression:manage"]},
            ]
            assert "insufficient_scope" in operation["responses"]["403"]["description"]
        imported = operations[("/v1/suppressions/import", "post")]["requestBody"]["content"]
        assert set(imported) == {"text/csv", "application/x-ndjson"}


def test_a_global_entry_shows_a_client_nothing_but_its_address() -> None:
    entry = Suppression(
        address="g@example.com",
        reason=SuppressionReason.COMPLAINT,
        note="operator's note",
        source="ses:evt-1",
        id=7,
        created_at=NOW,
    )
    view = client_view(entry).model_dump(mode="json")
    assert view == {
        "address": "g@example.com",
        "scope": "global",
        "status": "suppressed (global)",
        "reason": None,
        "note": None,
        "source": None,
        "created_at": None,
        "updated_at": None,
        "expires_at": None,
    }
