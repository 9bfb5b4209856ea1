"""The one strict reader of request bodies and parameters (entrypoints/request_body.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mailroom.domain.errors import (
    MailroomError,
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnsupportedValue,
)
from mailroom.entrypoints.request_body import (
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    parse_json,
    prepare_event,
)


def _nested(depth: int) -> str:
    """A JSON document ``depth`` levels deep: {"a": {"a": ... {} ...}}."""
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


class TestParseJson:
    def test_ordinary_json_is_parsed_as_json_loads_would(self) -> None:
        # GIVEN a body with every JSON type, escapes and a surrogate pair
        text = json.dumps(
            {"s": "Zoë 😀", "i": -12, "f": 1.5e300, "b": True, "n": None, "l": [1, {"k": "v"}]}
        )
        # WHEN parsed strictly THEN the same value as json.loads
        assert parse_json(text) == json.loads(text)

    @pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
    def test_nan_and_infinity_are_not_json(self, constant: str) -> None:
        # WHEN a body holds Python's JSON extension THEN 400 malformed_json
        with pytest.raises(MalformedRequest) as raised:
            parse_json(f'{{"props": {{"x": {constant}}}}}')
        assert raised.value.code == "malformed_json"
        assert constant in raised.value.message

    @pytest.mark.parametrize(
        ("text", "field"),
        [
            ('{"props": {"price": 1e400}}', "props.price"),
            ('{"props": {"price": -1e400}}', "props.price"),
            ('{"metadata": {"n": ' + "9" * (MAX_INT_DIGITS + 1) + "}}", "metadata.n"),
            ('{"l": [0, -' + "1" * (MAX_INT_DIGITS + 5) + "]}", "l.1"),
            ("1e999", "body"),
        ],
    )
    def test_numbers_out_of_range_are_named(self, text: str, field: str) -> None:
        with pytest.raises(UnsupportedValue) as raised:
            parse_json(text)
        assert raised.value.code == "unsupported_value"
        assert raised.value.details[0]["field"] == field
        assert raised.value.details[0]["type"] == "number_out_of_range"

    def test_the_longest_int_python_converts_is_accepted(self) -> None:
        assert parse_json("9" * MAX_INT_DIGITS) == int("9" * MAX_INT_DIGITS)

    @pytest.mark.parametrize(
        ("text", "field", "kind"),
        [
            ('{"props": {"name": "a\\u0000b"}}', "props.name", "nul_character"),
            ('{"props": {"a\\u0000": 1}}', "props", "nul_character"),
            ('{"to": ["x@example.com", "\\u0000"]}', "to.1", "nul_character"),
            ('{"subject": "\\ud800"}', "subject", "lone_surrogate"),
            ('{"props": {"\\udfff": 1}}', "props", "lone_surrogate"),
            ('"\\u0000"', "body", "nul_character"),
        ],
    )
    def test_nul_and_lone_surrogates_are_named(self, text: str, field: str, kind: str) -> None:
        with pytest.raises(UnsupportedValue) as raised:
            parse_json(text)
        assert (raised.value.details[0]["field"], raised.value.details[0]["type"]) == (field, kind)
        assert field in raised.value.message

    def test_an_escaped_backslash_before_u0000_is_text_not_a_nul(self) -> None:
        assert parse_json('{"s": "\\\\u0000"}') == {"s": "\\u0000"}

    def test_nesting_up_to_the_limit_is_accepted_and_one_more_is_refused(self) -> None:
        assert parse_json(_nested(MAX_JSON_DEPTH)) is not None
        with pytest.raises(UnsupportedValue) as raised:
            parse_json(_nested(MAX_JSON_DEPTH + 1))
        assert raised.value.details[0]["type"] == "too_deep"
        assert raised.value.details[0]["limit"] == MAX_JSON_DEPTH

    def test_depth_is_read_from_the_structure_not_from_brackets_in_strings(self) -> None:
        # GIVEN a wide, shallow body (a batch's 1,000 items) with brackets and
        # escaped quotes inside its strings, then one item nested one level too deep
        item = {"to": "a@example.com", "props": {"s": '[{"x": "\\"}]' * 40, "l": [[1], {}]}}
        wide = [item] * 1000
        assert parse_json(json.dumps(wide)) == wide
        deep: Any = "leaf ]]} {"
        for level in range(MAX_JSON_DEPTH - 1):
            deep = [deep] if level % 2 else {"k": deep}
        assert parse_json(json.dumps([item, deep])) is not None
        # THEN one more level is refused, naming where it is
        with pytest.raises(UnsupportedValue) as raised:
            parse_json(json.dumps([item, [deep]]))
        assert raised.value.details[0]["type"] == "too_deep"
        assert raised.value.details[0]["field"].startswith("1.0.")

    def test_nesting_past_pythons_recursion_limit_is_refused_not_raised(self) -> None:
        # GIVEN 100,000 open brackets (json.loads raises RecursionError)
        with pytest.raises(UnsupportedValue) as raised:
            parse_json("[" * 100_000 + "]" * 100_000)
        assert raised.value.details[0]["type"] == "too_deep"

    @pytest.mark.parametrize("text", ["{", "", "[1,]", "\ufeff{}", '{"a": "\x01"}', "{'a': 1}"])
    def test_text_that_is_not_json_is_malformed(self, text: str) -> None:
        with pytest.raises(MalformedRequest) as raised:
            parse_json(text)
        assert raised.value.code == "malformed_json"

    def test_bytes_that_are_not_utf8_are_malformed(self) -> None:
        with pytest.raises(MalformedRequest):
            parse_json(b'{"a": "\xff"}')


def _event(body: str | None, **headers: str) -> dict[str, Any]:
    return {
        "httpMethod": "POST",
        "path": "/v1/send",
        "headers": dict(headers),
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "body": body,
        "isBase64Encoded": False,
    }


class TestPrepareEvent:
    def test_an_ordinary_json_request_is_passed_on_untouched(self) -> None:
        event = _event('{"a": 1}', **{"Content-Type": "application/json"})
        assert prepare_event(event, 1024) is event

    @pytest.mark.parametrize(
        "content_type",
        [
            "Application/JSON",
            "application/json; charset=utf-8",
            "APPLICATION/JSON;CHARSET=UTF-8",
            'application/json; charset="utf-8"',
            "application/problem+json",
        ],
    )
    def test_json_in_any_case_or_with_parameters_is_accepted_as_plain_json(
        self, content_type: str
    ) -> None:
        prepared = prepare_event(_event("{}", **{"content-type": content_type}), 1024)
        # THEN Powertools (which compares case-sensitively) sees application/json
        assert prepared["headers"] == {"Content-Type": "application/json"}
        assert prepared["multiValueHeaders"] == {"Content-Type": ["application/json"]}

    @pytest.mark.parametrize(
        "content_type",
        ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
    )
    def test_other_media_types_are_415(self, content_type: str) -> None:
        with pytest.raises(UnsupportedMediaType):
            prepare_event(_event("{}", **{"Content-Type": content_type}), 1024)

    def test_an_unknown_charset_is_415(self) -> None:
        with pytest.raises(UnsupportedMediaType):
            prepare_event(_event("{}", **{"Content-Type": "application/json; charset=klingon"}), 99)

    def test_a_base64_body_is_decoded_with_its_declared_charset(self) -> None:
        # GIVEN a Latin-1 body (not UTF-8), as API Gateway passes binary bodies
        raw = '{"name": "Zoë"}'.encode("latin-1")
        event = _event(
            base64.b64encode(raw).decode(), **{"Content-Type": "application/json; charset=latin-1"}
        )
        event["isBase64Encoded"] = True
        prepared = prepare_event(event, 1024)
        # THEN the routes see the text, decoded right
        assert prepared["body"] == '{"name": "Zoë"}'
        assert prepared["isBase64Encoded"] is False

    def test_a_base64_body_that_is_not_utf8_is_malformed(self) -> None:
        event = _event(base64.b64encode(b'{"a": "\xff\xfe"}').decode())
        event["isBase64Encoded"] = True
        with pytest.raises(MalformedRequest) as raised:
            prepare_event(event, 1024)
        assert raised.value.code == "malformed_json"

    def test_a_text_body_with_a_lone_surrogate_is_malformed(self) -> None:
        with pytest.raises(MalformedRequest):
            prepare_event(_event('{"a": "\ud800"}'), 1024)

    def test_the_size_is_counted_in_bytes_after_decoding(self) -> None:
        event = _event(base64.b64encode(b"[" + b"1," * 600 + b"1]").decode())
        event["isBase64Encoded"] = True
        with pytest.raises(PayloadTooLarge):
            prepare_event(event, 1000)

    @pytest.mark.parametrize(
        ("where", "field"),
        [
            ("queryStringParameters", "query.recipient"),
            ("multiValueQueryStringParameters", "query.recipient"),
            ("pathParameters", "path.recipient"),
            ("headers", "header.recipient"),
        ],
    )
    def test_nul_in_a_parameter_is_named(self, where: str, field: str) -> None:
        event = _event(None)
        value: Any = ["a\x00b"] if where.startswith("multi") else "a\x00b"
        event[where] = {"recipient": value}
        with pytest.raises(UnsupportedValue) as raised:
            prepare_event(event, 1024)
        assert raised.value.details[0]["field"] == field

    def test_nul_in_the_path_is_named(self) -> None:
        event = _event(None)
        event["path"] = "/admin/clients/\x00"
        with pytest.raises(MailroomError) as raised:
            prepare_event(event, 1024)
        assert raised.value.details[0]["field"] == "path"
