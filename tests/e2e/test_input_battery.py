"""The hand battery through the local runner: what the gateway itself refuses, and raw bytes.

Raw HTTP (http.client), so the test controls every byte: bodies that are not
UTF-8, media types, methods, header sizes. Each answer is in the one error
shape, and nothing is written.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.harness import SAMPLE_PROPS, Runner

pytestmark = pytest.mark.e2e


def raw(
    runner: Runner,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    address = urlsplit(runner.api_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        found = {name.lower(): value for name, value in response.getheaders()}
        return response.status, found, json.loads(payload) if payload else None
    finally:
        connection.close()


def message_rows(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM messages")).scalar_one())
    finally:
        engine.dispose()


def _error(answer: tuple[int, dict[str, str], Any], status: int, code: str) -> dict[str, Any]:
    got, headers, body = answer
    assert (got, (body or {}).get("error", {}).get("code")) == (status, code), answer
    assert headers["content-type"].startswith("application/json")
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]  # type: ignore[no-any-return]


def _send_body(**overrides: Any) -> dict[str, Any]:
    return {"template": "welcome", "to": "ada@example.com", "props": SAMPLE_PROPS, **overrides}


class TestGatewayLimits:
    def test_headers_over_10_kib_are_refused_before_the_function(
        self, runner: Runner, database_url: str
    ) -> None:
        # GIVEN a valid send with 11 KB of extra header values
        before = message_rows(database_url)
        headers = {
            **runner.auth_headers(),
            "Content-Type": "application/json",
            **{f"X-Pad-{i}": "p" * 1000 for i in range(11)},
        }
        answer = raw(runner, "POST", "/v1/send", json.dumps(_send_body()).encode(), headers)
        # THEN API Gateway's REQUEST_TOO_LARGE in the error shape; nothing sent
        _error(answer, 413, "request_too_large")
        assert message_rows(database_url) == before

    def test_headers_just_under_the_limit_pass(self, runner: Runner) -> None:
        headers = {**runner.auth_headers(), "X-Pad": "p" * 8000}
        status, _, body = raw(runner, "GET", "/v1/messages?limit=1", None, headers)
        assert status == 200, body

    def test_one_header_line_over_64_kib_is_refused_as_json(self, runner: Runner) -> None:
        # http.server refuses these lines itself; the runner answers in the shape
        answer = raw(runner, "GET", "/health", None, {"X-Huge": "h" * 70_000})
        _error(answer, 413, "request_too_large")

    def test_a_long_query_string_counts_too(self, runner: Runner) -> None:
        answer = raw(runner, "GET", "/v1/messages?recipient=" + "a" * 11_000, None)
        _error(answer, 413, "request_too_large")


class TestMethods:
    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("PUT", "/v1/send", "POST"),
            ("GET", "/v1/send", "POST"),
            ("DELETE", "/v1/messages", "GET"),
            # PATCH moves a scheduled message (issue 18)
            ("POST", "/v1/messages/00000000-0000-0000-0000-000000000000", "GET, PATCH"),
            ("PATCH", "/v1/messages/x/events", "GET"),
            ("POST", "/health", "GET"),
            ("DELETE", "/openapi.json", "GET"),
            ("PUT", "/docs", "GET"),
            ("GET", "/webhooks/ses", "POST"),
            # POST is routed too: /webhooks/{provider} with provider "health"
            ("DELETE", "/webhooks/health", "GET, POST"),
            ("PUT", "/admin/health", "GET"),
            ("PATCH", "/admin/templates", "GET, POST"),
        ],
    )
    def test_an_undeclared_method_on_a_known_path_is_405_with_allow(
        self, runner: Runner, method: str, path: str, allowed: str
    ) -> None:
        answer = raw(runner, method, path, None, runner.auth_headers())
        _error(answer, 405, "method_not_allowed")
        assert answer[1]["allow"] == allowed

    def test_an_unknown_path_is_still_404(self, runner: Runner) -> None:
        _error(raw(runner, "PUT", "/v2/send"), 404, "route_not_found")


class TestBodies:
    def test_a_body_that_is_not_utf8_is_400_and_nothing_is_written(
        self, runner: Runner, database_url: str
    ) -> None:
        before = message_rows(database_url)
        body = json.dumps(_send_body()).encode()[:-2] + b'\xc3\x28"}'
        headers = {**runner.auth_headers(), "Content-Type": "application/json"}
        _error(raw(runner, "POST", "/v1/send", body, headers), 400, "malformed_json")
        assert message_rows(database_url) == before

    def test_a_declared_latin1_body_is_read_as_latin1(self, runner: Runner) -> None:
        props = {**SAMPLE_PROPS, "first_name": "Zoë"}
        body = json.dumps(_send_body(props=props), ensure_ascii=False).encode("latin-1")
        headers = {**runner.auth_headers(), "Content-Type": "application/json; charset=latin-1"}
        status, _, answer = raw(runner, "POST", "/v1/send", body, headers)
        assert status == 202, answer

    @pytest.mark.parametrize(
        "content_type", ["Application/JSON", "application/json; charset=utf-8", "APPLICATION/JSON"]
    )
    def test_json_spelt_any_way_is_accepted(self, runner: Runner, content_type: str) -> None:
        headers = {**runner.auth_headers(), "Content-Type": content_type}
        status, _, answer = raw(
            runner, "POST", "/v1/send", json.dumps(_send_body()).encode(), headers
        )
        assert status == 202, answer

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
    def test_other_media_types_are_415(self, runner: Runner, content_type: str) -> None:
        headers = {**runner.auth_headers(), "Content-Type": content_type}
        body = json.dumps(_send_body()).encode()
        _error(raw(runner, "POST", "/v1/send", body, headers), 415, "unsupported_media_type")

    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            (
                json.dumps(_send_body(props={**SAMPLE_PROPS, "x": "\u0000"})),
                422,
                "unsupported_value",
            ),
            (
                json.dumps(_send_body(metadata={"n": 1})).replace('"n": 1', '"n": 1e400'),
                422,
                "unsupported_value",
            ),
            (
                json.dumps(_send_body(metadata={"n": 1})).replace('"n": 1', '"n": NaN'),
                400,
                "malformed_json",
            ),
            (
                json.dumps(_send_body(props={**SAMPLE_PROPS, "x": "\ud800"})),
                422,
                "unsupported_value",
            ),
            ("[" * 50_000 + "]" * 50_000, 422, "unsupported_value"),
            (json.dumps(_send_body(template_version=2**31)), 422, "validation_error"),
        ],
    )
    def test_unstorable_json_is_refused_and_nothing_is_written(
        self, runner: Runner, database_url: str, body: str, status: int, code: str
    ) -> None:
        before = message_rows(database_url)
        headers = {**runner.auth_headers(), "Content-Type": "application/json"}
        _error(raw(runner, "POST", "/v1/send", body.encode(), headers), status, code)
        assert message_rows(database_url) == before
