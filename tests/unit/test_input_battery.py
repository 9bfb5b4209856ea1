"""The hand battery on the resolvers: odd input gets a 4xx in the one error shape.

And nothing is written: no row, no queue message, no quota charge, no upload.

Each case goes through ``create_api`` exactly as the functions build it (the
client gate, the strict body reader, Powertools' validation, the error
table), on fakes; tests/integration/test_input_battery.py runs the same kinds
of input against real PostgreSQL and Redis.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from mailroom.domain.addresses import reject_line_breaks
from mailroom.domain.errors import HeaderInjection
from mailroom.entrypoints.api import create_api, status_routes
from mailroom.entrypoints.http_errors import routes_of
from mailroom.entrypoints.request_body import MAX_JSON_DEPTH
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.unit.test_template_api import TEMPLATES, Api

WELCOME_SAMPLE: dict[str, Any] = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())


def _welcome(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": "welcome",
        "to": "ada@example.com",
        "props": copy.deepcopy(WELCOME_SAMPLE),
    }
    body.update(overrides)
    return body


class Battery(Api):
    """The template API's fakes, plus raw requests and a record of what was written."""

    def written(self) -> tuple[Any, ...]:
        return (
            copy.deepcopy(self.uow.messages.rows),
            list(self.queue.sent),
            dict(self.services.quota.counters),  # type: ignore[attr-defined]
            {name: list(versions) for name, versions in self.uploads.uploads.items()},
            # Authentication stamps last_used_at: the clients themselves must not change.
            {id_: (c.name, c.status, c.rate_limit) for id_, c in self.uow.clients.rows.items()},
            dict(self.uow.feedback_state.suppressions),
            list(self.uow.audit.entries),
        )

    def raw(
        self,
        method: str,
        path: str,
        body: str | None = None,
        *,
        admin: bool = False,
        base64_body: bytes | None = None,
        query: dict[str, str] | None = None,
        **headers: str | None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        event = load_event("send/send-welcome")
        event["httpMethod"], event["path"], event["resource"] = method, path, path
        if admin:
            with_headers(
                event, Authorization="Bearer template-admin-token-with-plenty-of-entropy-42"
            )
        else:
            with_headers(event, X_Api_Key=self.client.api_key, X_Api_Secret=self.client.api_secret)
        with_headers(event, **headers)
        event["body"], event["isBase64Encoded"] = body, False
        if base64_body is not None:
            event["body"], event["isBase64Encoded"] = base64.b64encode(base64_body).decode(), True
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = (
            {k: [v] for k, v in query.items()} if query else None
        )
        response = self.app.resolve(event, FakeLambdaContext())
        answer = json.loads(response["body"]) if response.get("body") else {}
        found = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        for name, values in (response.get("multiValueHeaders") or {}).items():
            found[name.lower()] = ", ".join(values)
        return response["statusCode"], answer, found


def _assert_refused(
    answer: tuple[int, dict[str, Any], dict[str, str]], status: int, code: str
) -> dict[str, Any]:
    got_status, body, headers = answer
    assert (got_status, body.get("error", {}).get("code")) == (status, code), body
    # the one error shape, nothing more and nothing less
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    assert headers.get("content-type") == "application/json"
    return body["error"]  # type: ignore[no-any-return]


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


# Raw JSON text for /v1/send, with the field each should be refused for.
SEND_BODIES: list[tuple[str, str, int, str, str | None]] = [
    # (case, body text, status, code, field named)
    ("nul in to", json.dumps(_welcome(to="ada\u0000@example.com")), 422, "unsupported_value", "to"),
    (
        "nul in a prop",
        json.dumps(_welcome(props={"name": "A\u0000"})),
        422,
        "unsupported_value",
        "props.name",
    ),
    (
        "nul in a prop key",
        json.dumps(_welcome(props={"\u0000": 1})),
        422,
        "unsupported_value",
        "props",
    ),
    (
        "nul in metadata",
        json.dumps(_welcome(metadata={"k": "v\u0000"})),
        422,
        "unsupported_value",
        "metadata.k",
    ),
    (
        "nul in subject",
        json.dumps(_welcome(subject="Hi\u0000")),
        422,
        "unsupported_value",
        "subject",
    ),
    (
        "nul in from",
        json.dumps(_welcome(**{"from": "a@example.com\u0000"})),
        422,
        "unsupported_value",
        "from",
    ),
    (
        "nul in cc",
        json.dumps(_welcome(cc=["b@example.com", "\u0000"])),
        422,
        "unsupported_value",
        "cc.1",
    ),
    (
        "lone surrogate in a prop",
        json.dumps(_welcome(props={"name": "\ud800"})),
        422,
        "unsupported_value",
        "props.name",
    ),
    (
        "lone surrogate in the template",
        json.dumps(_welcome(template="\udc00")),
        422,
        "unsupported_value",
        "template",
    ),
    (
        "1e400",
        json.dumps(_welcome())[:-1] + ', "metadata": {"n": 1e400}}',
        422,
        "unsupported_value",
        "metadata.n",
    ),
    (
        "-1e400 in props",
        json.dumps(_welcome())[:-1].replace('"props": {', '"props": {"x": -1e400, ') + "}",
        422,
        "unsupported_value",
        "props.x",
    ),
    (
        "4301 digits",
        json.dumps(_welcome())[:-1] + ', "metadata": {"n": ' + "7" * 4301 + "}}",
        422,
        "unsupported_value",
        "metadata.n",
    ),
    ("NaN", json.dumps(_welcome())[:-1] + ', "metadata": {"n": NaN}}', 400, "malformed_json", None),
    (
        "Infinity",
        json.dumps(_welcome())[:-1] + ', "metadata": {"n": Infinity}}',
        400,
        "malformed_json",
        None,
    ),
    (
        "-Infinity in props",
        json.dumps(_welcome(props={"x": 0})).replace("0}", "-Infinity}"),
        400,
        "malformed_json",
        None,
    ),
    (
        "props nested too deep",
        json.dumps(_welcome(props=_deep(MAX_JSON_DEPTH))),
        422,
        "unsupported_value",
        None,
    ),
    ("100,000 brackets", "[" * 100_000 + "]" * 100_000, 422, "unsupported_value", "body"),
    (
        "template_version 2^31",
        json.dumps(_welcome(template_version=2**31)),
        422,
        "validation_error",
        "template_version",
    ),
    (
        "template_version -2^31",
        json.dumps(_welcome(template_version=-(2**31))),
        422,
        "validation_error",
        "template_version",
    ),
    (
        "template_version 10^400",
        json.dumps(_welcome())[:-1] + ', "template_version": 1' + "0" * 400 + "}",
        422,
        "validation_error",
        "template_version",
    ),
    ("not JSON", '{"template": ', 400, "malformed_json", None),
    ("a BOM", "\ufeff" + json.dumps(_welcome()), 400, "malformed_json", None),
]


class TestSendBodies:
    @pytest.mark.parametrize(
        ("text", "status", "code", "field"),
        [case[1:] for case in SEND_BODIES],
        ids=[case[0] for case in SEND_BODIES],
    )
    def test_refused_with_the_field_named_and_nothing_written(
        self, text: str, status: int, code: str, field: str | None
    ) -> None:
        # GIVEN a client with nothing sent
        api = Battery()
        before = api.written()
        # WHEN it sends the odd body
        error = _assert_refused(
            api.raw("POST", "/v1/send", text, Content_Type="application/json"), status, code
        )
        # THEN 4xx naming the field; no row, no queue message, no quota charge
        if field is not None:
            assert error["details"][0]["field"] == field, error
        assert api.written() == before

    def test_a_body_that_is_not_utf8_is_malformed_json(self) -> None:
        # GIVEN bytes that are not UTF-8, which API Gateway passes base64-encoded
        api = Battery()
        before = api.written()
        answer = api.raw(
            "POST",
            "/v1/send",
            base64_body=json.dumps(_welcome()).encode()[:-2] + b'\xff"}',
            Content_Type="application/json",
        )
        _assert_refused(answer, 400, "malformed_json")
        assert api.written() == before

    def test_a_declared_charset_is_honoured(self) -> None:
        # GIVEN a Latin-1 body declared as such
        api = Battery()
        body = json.dumps(_welcome(props={**WELCOME_SAMPLE, "name": "Zoë"}), ensure_ascii=False)
        status, answer, _ = api.raw(
            "POST",
            "/v1/send",
            base64_body=body.encode("latin-1"),
            Content_Type="application/json; charset=ISO-8859-1",
        )
        # THEN accepted, with the name as written
        assert status == 202, answer
        (message,) = api.uow.messages.rows.values()
        assert message.props["name"] == "Zoë"

    def test_nesting_at_the_limit_is_accepted(self) -> None:
        # the body, props and 62 more levels: MAX_JSON_DEPTH in all
        api = Battery()
        props = {**WELCOME_SAMPLE, "deep": _deep(MAX_JSON_DEPTH - 3)}
        status, answer, _ = api.raw(
            "POST", "/v1/send", json.dumps(_welcome(props=props)), Content_Type="application/json"
        )
        assert status == 202, answer


HEADER_FIELDS = ["to", "cc", "bcc", "reply_to", "from", "subject"]


class TestHeaderFields:
    @pytest.mark.parametrize("field", HEADER_FIELDS)
    @pytest.mark.parametrize("breaker", ["\r\n", "\n", "\r", "\u2028", "\x85"])
    def test_a_line_break_in_any_header_field_is_header_injection(
        self, field: str, breaker: str
    ) -> None:
        api = Battery()
        before = api.written()
        value = f"Ada{breaker}Bcc: eve@example.com"
        if field != "subject":
            value = f"ada@example.com{breaker}Bcc: eve@example.com"
        body = _welcome(**{field: value})
        error = _assert_refused(
            api.raw("POST", "/v1/send", json.dumps(body), Content_Type="application/json"),
            422,
            "header_injection",
        )
        assert error["details"][0]["field"].split(".")[0] == field
        assert "line break" in error["message"]
        assert api.written() == before

    def test_an_idn_address_passes_validation(self) -> None:
        # Validation only: how it is sent is the providers' part (issue 14, item 2).
        api = Battery()
        body = _welcome(to="zoe@bücher.example", cc=["info@例え.テスト"], bcc="zoë@example.com")
        status, answer, _ = api.raw(
            "POST", "/v1/send", json.dumps(body), Content_Type="application/json"
        )
        assert status == 202, answer


class TestMediaTypes:
    @pytest.mark.parametrize(
        "content_type",
        [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "APPLICATION/JSON; CHARSET=utf-8",
            None,
        ],
    )
    def test_json_is_accepted_however_it_is_spelt(self, content_type: str | None) -> None:
        api = Battery()
        status, answer, _ = api.raw(
            "POST", "/v1/send", json.dumps(_welcome()), Content_Type=content_type
        )
        assert status == 202, answer

    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "application/xml",
            "application/json; charset=no-such-charset",
        ],
    )
    def test_other_media_types_are_415(self, content_type: str) -> None:
        api = Battery()
        before = api.written()
        _assert_refused(
            api.raw("POST", "/v1/send", json.dumps(_welcome()), Content_Type=content_type),
            415,
            "unsupported_media_type",
        )
        assert api.written() == before


class TestMethods:
    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("GET", "/v1/send", "POST"),
            ("PUT", "/v1/send", "POST"),
            ("DELETE", "/v1/send", "POST"),
            ("PATCH", "/admin/templates", "GET, POST"),
            ("DELETE", "/admin/clients/acme", "GET, PATCH"),
            ("GET", "/admin/dlq/purge", "POST"),
            ("PUT", "/admin/suppressions", "DELETE, GET, POST"),
            ("HEAD", "/admin/whoami", "GET"),
            ("OPTIONS", "/admin/health", "GET"),
        ],
    )
    def test_an_undeclared_method_is_405_with_allow(
        self, method: str, path: str, allowed: str
    ) -> None:
        api = Battery()
        before = api.written()
        answer = api.raw(method, path, None, admin=path.startswith("/admin"))
        error = _assert_refused(answer, 405, "method_not_allowed")
        assert answer[2]["allow"] == allowed
        assert error["details"] == [{"allowed": allowed.split(", ")}]
        assert api.written() == before

    def test_405_comes_before_authentication(self) -> None:
        # GIVEN no credentials at all WHEN GET /v1/send THEN still 405: routing first
        api = Battery()
        answer = api.raw("GET", "/v1/send", None, X_Api_Key=None, X_Api_Secret=None)
        _assert_refused(answer, 405, "method_not_allowed")

    def test_an_unknown_path_is_still_404(self) -> None:
        api = Battery()
        _assert_refused(api.raw("PUT", "/v1/nothing", None), 404, "route_not_found")

    def test_powertools_still_keeps_its_routes_where_routes_of_reads_them(self) -> None:
        # routes_of reads private attributes: this fails first if Powertools moves them.
        assert {route.method for route in routes_of(Battery().app)} >= {"GET", "POST", "PATCH"}


ADMIN_BODIES: list[tuple[str, str, str, Any, int, str, str | None]] = [
    # (case, method, path, body, status, code, field)
    (
        "template html with NUL",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "<p>\u0000</p>"},
        422,
        "unsupported_value",
        "html",
    ),
    (
        "template subject with NUL",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s\u0000", "html": "<p></p>"},
        422,
        "unsupported_value",
        "subject",
    ),
    (
        "template schema with NUL",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "x", "schema": {"title": "\u0000"}},
        422,
        "unsupported_value",
        "schema.title",
    ),
    (
        "template sample with NUL key",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "x", "sample": {"\u0000": 1}},
        422,
        "unsupported_value",
        "sample",
    ),
    (
        "100 nested ifs",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "{% if x %}" * 100 + "y" + "{% endif %}" * 100},
        422,
        "template_syntax_error",
        "html",
    ),
    (
        "25 nested fors",
        "POST",
        "/admin/templates",
        {
            "name": "t1",
            "subject": "s",
            "text": "{% for a in x %}" * 25 + "{% endfor %}" * 25,
            "html": "x",
        },
        422,
        "template_syntax_error",
        "text",
    ),
    (
        "schema with a non-string $schema",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "x", "schema": {"$schema": 5}},
        422,
        "template_syntax_error",
        "schema",
    ),
    (
        "schema with an unknown type",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "x", "schema": {"type": "nope"}},
        422,
        "template_syntax_error",
        "schema",
    ),
    (
        "schema with a bad regex",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "x", "schema": {"pattern": "("}},
        422,
        "template_syntax_error",
        "schema",
    ),
    (
        "schema with a dangling $ref",
        "POST",
        "/admin/templates",
        {
            "name": "t1",
            "subject": "s",
            "html": "x",
            "schema": {"properties": {"a": {"$ref": "#/$defs/none"}}},
        },
        422,
        "template_syntax_error",
        "schema",
    ),
    (
        "schema with a remote $ref",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "x", "schema": {"$ref": "https://example.com/s"}},
        422,
        "template_syntax_error",
        "schema",
    ),
    (
        "schema that refers to itself",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "x", "schema": {"$ref": "#"}},
        422,
        "template_syntax_error",
        "schema",
    ),
    (
        "schema nested too deep",
        "POST",
        "/admin/templates",
        {"name": "t1", "subject": "s", "html": "x", "schema": _deep(MAX_JSON_DEPTH)},
        422,
        "unsupported_value",
        None,
    ),
    (
        "preview version 2^31",
        "POST",
        "/admin/templates/welcome/preview",
        {"version": 2**31},
        422,
        "validation_error",
        "version",
    ),
    (
        "client name with NUL",
        "POST",
        "/admin/clients",
        {"name": "ac\u0000me"},
        422,
        "unsupported_value",
        "name",
    ),
    (
        "client name lone surrogate",
        "PATCH",
        "/admin/clients/acme",
        {"name": "\ud83d"},
        422,
        "unsupported_value",
        "name",
    ),
    (
        "client rate_limit 2^31",
        "POST",
        "/admin/clients",
        {"name": "x", "rate_limit": 2**31},
        422,
        "validation_error",
        "rate_limit",
    ),
    (
        "suppression note with NUL",
        "POST",
        "/admin/suppressions",
        {"address": "a@example.com", "note": "\u0000"},
        422,
        "unsupported_value",
        "note",
    ),
    (
        "suppression address with NUL",
        "POST",
        "/admin/suppressions",
        {"address": "a\u0000@example.com"},
        422,
        "unsupported_value",
        "address",
    ),
    (
        "dlq purge confirm with NUL",
        "POST",
        "/admin/dlq/purge",
        {"confirm": "\u0000"},
        422,
        "unsupported_value",
        "confirm",
    ),
    (
        "reconcile client with NUL",
        "POST",
        "/admin/quota/reconcile",
        {"client": "\u0000"},
        422,
        "unsupported_value",
        "client",
    ),
]


class TestAdminBodies:
    @pytest.mark.parametrize(
        ("method", "path", "body", "status", "code", "field"),
        [case[1:] for case in ADMIN_BODIES],
        ids=[case[0] for case in ADMIN_BODIES],
    )
    def test_refused_and_nothing_written(
        self, method: str, path: str, body: Any, status: int, code: str, field: str | None
    ) -> None:
        api = Battery()
        before = api.written()
        error = _assert_refused(
            api.raw(method, path, json.dumps(body), admin=True, Content_Type="application/json"),
            status,
            code,
        )
        if field is not None:
            assert error["details"][0]["field"] == field, error
        assert api.written() == before

    @pytest.mark.parametrize(
        ("path", "query", "field"),
        [
            ("/admin/suppressions", {"address": "a\x00"}, "query.address"),
            ("/admin/suppressions", {"cursor": "\x00"}, "query.cursor"),
            ("/admin/audit", {"target": "\x00"}, "query.target"),
            ("/admin/clients/\x00", None, "path"),
        ],
    )
    def test_nul_in_a_query_or_path_is_named(
        self, path: str, query: dict[str, str] | None, field: str
    ) -> None:
        api = Battery()
        error = _assert_refused(
            api.raw("GET", path, None, admin=True, query=query), 422, "unsupported_value"
        )
        assert error["details"][0]["field"] == field

    @pytest.mark.parametrize("cursor", ["²", "99999999999999999999", "-1", "1.5", " 1"])
    def test_a_suppression_cursor_outside_bigint_is_refused(self, cursor: str) -> None:
        api = Battery()
        error = _assert_refused(
            api.raw("GET", "/admin/suppressions", None, admin=True, query={"cursor": cursor}),
            422,
            "validation_error",
        )
        assert error["details"][0]["field"] == "cursor"


class TestStatusQueries:
    @pytest.mark.parametrize(
        ("query", "status", "code"),
        [
            ({"recipient": "a\x00b"}, 422, "unsupported_value"),
            ({"cursor": "\x00"}, 422, "unsupported_value"),
            ({"cursor": "not-one-of-ours"}, 422, "validation_error"),
            ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, 422, "validation_error"),
            ({"since": "1e20"}, 422, "validation_error"),
            ({"since": "-99999999999999"}, 422, "validation_error"),
            ({"until": "9999-99-99"}, 422, "validation_error"),
            ({"limit": "9" * 5000}, 422, "validation_error"),
            ({"limit": "0"}, 422, "validation_error"),
            ({"status": "\ud800"}, 422, "unsupported_value"),
        ],
    )
    def test_odd_list_filters_are_refused(
        self, query: dict[str, str], status: int, code: str
    ) -> None:
        api = Battery()
        # The template API has no status routes: built here as functions/status does.
        app = create_api([status_routes(lambda: api.services)], max_request_bytes=lambda: 1024)
        event = load_event("send/send-welcome")
        event["httpMethod"], event["path"], event["resource"] = (
            "GET",
            "/v1/messages",
            "/v1/messages",
        )
        with_headers(event, X_Api_Key=api.client.api_key, X_Api_Secret=api.client.api_secret)
        with_body(event, "")
        event["body"] = None
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
        response = app.resolve(event, FakeLambdaContext())
        body = json.loads(response["body"])
        assert (response["statusCode"], body["error"]["code"]) == (status, code), body


class TestErrorDetail:
    def test_invalid_props_lists_each_failing_field_once(self) -> None:
        # GIVEN a template whose schema checks one field with two keywords and
        # requires a missing prop twice (once more through allOf)
        api = Battery()
        schema = {
            "type": "object",
            "required": ["name", "code"],
            "properties": {"code": {"type": "string", "minLength": 5, "pattern": "^[0-9]+$"}},
            "allOf": [{"required": ["name"]}],
        }
        status, _, _ = api.raw(
            "POST",
            "/admin/templates",
            json.dumps({"name": "twice", "subject": "s", "html": "{{ code }}", "schema": schema}),
            admin=True,
            Content_Type="application/json",
        )
        assert status == 201
        # WHEN a send breaks all of them
        error = _assert_refused(
            api.raw(
                "POST",
                "/v1/send",
                json.dumps({"template": "twice", "to": "a@example.com", "props": {"code": 7}}),
                Content_Type="application/json",
            ),
            422,
            "invalid_props",
        )
        # THEN each field once
        fields = [detail["field"] for detail in error["details"]]
        assert sorted(fields) == ["props.code", "props.name"]

    def test_missing_prop_lists_every_missing_prop(self) -> None:
        # GIVEN a template using five props, one guarded by "is defined"
        api = Battery()
        html = (
            "<p>{{ first }} {{ second.name }} {% if optional is defined %}{{ optional }}"
            "{% endif %}{% for row in rows %}{{ row }}{% endfor %} {{ last }}</p>"
        )
        status, _, _ = api.raw(
            "POST",
            "/admin/templates",
            json.dumps({"name": "many", "subject": "Hi {{ first }}", "html": html}),
            admin=True,
            Content_Type="application/json",
        )
        assert status == 201
        before = api.written()
        # WHEN a send gives none of them
        error = _assert_refused(
            api.raw(
                "POST",
                "/v1/send",
                json.dumps({"template": "many", "to": "a@example.com", "props": {}}),
                Content_Type="application/json",
            ),
            422,
            "missing_prop",
        )
        # THEN every unguarded one is named, the guarded one is not
        fields = [detail["field"] for detail in error["details"]]
        assert fields == ["props.first", "props.second", "props.rows", "props.last"]
        assert api.written() == before

    def test_a_nul_in_a_header_field_is_named_as_a_nul(self) -> None:
        with pytest.raises(HeaderInjection) as raised:
            reject_line_breaks("subject", "Hello\x00")
        assert "NUL" in raised.value.message
        assert "line break" not in raised.value.message
        assert raised.value.details[0]["type"] == "nul_character"
        # and a line break next to a NUL is still named as the injection it is
        with pytest.raises(HeaderInjection) as raised:
            reject_line_breaks("subject", "Hello\x00\r\nBcc: x")
        assert "line break" in raised.value.message
