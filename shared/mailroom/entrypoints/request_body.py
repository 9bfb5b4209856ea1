"""Reading a request, strictly, in one place: bytes to text, text to JSON, parameters.

Every route of the client API and the admin API is read through here:
``MailroomApi`` passes ``parse_json`` to Powertools as its body deserializer
and runs ``prepare_event`` before routing. So no route has its own checks,
and no odd input reaches PostgreSQL, Redis or a template as something they
would choke on (a 500):

- the body must be UTF-8, or the charset its Content-Type declares (400
  ``malformed_json`` if it does not decode);
- the body must be JSON as RFC 8259 defines it: ``NaN`` and ``Infinity`` are
  Python's extensions, refused (400 ``malformed_json``);
- no string (key or value) may hold a NUL (PostgreSQL text and JSONB cannot)
  or a lone surrogate (not encodable as UTF-8); no number may overflow a
  float (``1e400``) or exceed Python's 4,300-digit int limit; nothing may be
  nested deeper than ``MAX_JSON_DEPTH``: 422 ``unsupported_value`` naming
  the field;
- query strings, path parameters and header values may not hold a NUL or a
  lone surrogate either (422 ``unsupported_value``).

The checks that walk the parsed body run only when the text could hold what
they look for (a ``\\u`` escape, more brackets than the depth limit), so the
send API's ordinary requests pay two substring scans.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from mailroom.domain.errors import (
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnsupportedValue,
)

# The deepest a JSON body may nest, counting the body itself: props, metadata
# and template schemas are well inside it; Python's own parser and
# jsonschema recurse, so a deeper document is refused before they see it.
MAX_JSON_DEPTH = 64
# Python refuses to convert longer decimal strings to int (CVE-2020-10735).
MAX_INT_DIGITS = 4300

_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotJson(ValueError):
    """A constant JSON does not have (NaN, Infinity, -Infinity)."""


class _Overflow(ValueError):
    """A float literal too large for a float (1e400)."""


class _TooManyDigits:
    """Stands in for an integer literal too long for int(), so the walk can name its field."""


_TOO_MANY_DIGITS = _TooManyDigits()


def _refuse_constant(name: str) -> Any:
    raise _NotJson(name)


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _Overflow(literal)
    return value


def _any_float(literal: str) -> float:
    return float(literal)


def _int_or_marker(literal: str) -> int | _TooManyDigits:
    digits = len(literal.lstrip("-"))
    return int(literal) if digits <= MAX_INT_DIGITS else _TOO_MANY_DIGITS


# Only floats (rare in requests) go through Python; ints, strings and the
# structure stay in the C scanner.
_strict = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)
# On the error path only: every number is kept in a form the walk can name.
_lenient = json.JSONDecoder(
    parse_float=_any_float, parse_int=_int_or_marker, parse_constant=_refuse_constant
)


def parse_json(text: str | bytes | bytearray) -> Any:
    """The JSON value of a request body; MalformedRequest or UnsupportedValue otherwise."""
    if not isinstance(text, str):
        text = decode_text(bytes(text), "utf-8")
    try:
        value = _strict.decode(text)
    except _NotJson as error:
        raise MalformedRequest(
            f"the request body is not valid JSON: {error} is not a JSON value",
            details=[{"field": "body", "type": "json_invalid", "message": f"{error} is not JSON"}],
        ) from None
    except json.JSONDecodeError as error:
        raise MalformedRequest(
            f"the request body is not valid JSON: {error.msg} "
            f"(line {error.lineno}, column {error.colno})",
            details=[
                {
                    "field": "body",
                    "type": "json_invalid",
                    "message": error.msg,
                    "line": error.lineno,
                    "column": error.colno,
                }
            ],
        ) from None
    except RecursionError:
        raise _too_deep("body") from None
    except ValueError:
        # _Overflow, or an int past MAX_INT_DIGITS: parse again keeping every
        # number, to say which field holds it.
        _check_value(_lenient.decode(text))
        raise _out_of_range("body") from None
    if "\\u" in text or text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_value(value)
    return value


def decode_text(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset)
    except UnicodeDecodeError as error:
        raise MalformedRequest(
            f"the request body is not valid {charset}: byte {error.start} cannot be decoded",
            details=[{"field": "body", "type": "encoding", "message": f"not valid {charset}"}],
        ) from None


def _check_value(value: Any) -> None:
    """Raise UnsupportedValue for the first string, number or depth that cannot be kept."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _check_text(path or "body", item)
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep(path or "body")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(path or "body", key, what="a key")
                    stack.append((child, f"{path}.{key}" if path else key, depth + 1))
            else:
                for index, child in enumerate(item):
                    stack.append((child, f"{path}.{index}" if path else str(index), depth + 1))
        elif item is _TOO_MANY_DIGITS or (isinstance(item, float) and math.isinf(item)):
            raise _out_of_range(path or "body")


def _check_text(field: str, text: str, *, what: str = "the value") -> None:
    if "\x00" in text:
        raise UnsupportedValue(
            f"{field}: {what} holds a NUL character (\\u0000), which cannot be stored",
            details=[
                {
                    "field": field,
                    "type": "nul_character",
                    "message": f"{what} holds a NUL character (\\u0000)",
                }
            ],
        )
    if not text.isascii() and _SURROGATE.search(text):
        raise UnsupportedValue(
            f"{field}: {what} holds a lone surrogate (\\ud800-\\udfff), which is not text",
            details=[
                {
                    "field": field,
                    "type": "lone_surrogate",
                    "message": f"{what} holds a lone UTF-16 surrogate",
                }
            ],
        )


def _too_deep(field: str) -> UnsupportedValue:
    return UnsupportedValue(
        f"{field}: JSON nests at most {MAX_JSON_DEPTH} levels deep",
        details=[
            {
                "field": field,
                "type": "too_deep",
                "message": f"nested deeper than {MAX_JSON_DEPTH} levels",
                "limit": MAX_JSON_DEPTH,
            }
        ],
    )


def _out_of_range(field: str) -> UnsupportedValue:
    return UnsupportedValue(
        f"{field}: the number is out of range (a float up to about 1.8e308, "
        f"an integer up to {MAX_INT_DIGITS} digits)",
        details=[{"field": field, "type": "number_out_of_range", "message": "number out of range"}],
    )


def prepare_event(event: Mapping[str, Any], max_body_bytes: int) -> Mapping[str, Any]:
    """The event as the routes may read it: parameters checked, the body JSON text.

    Raises PayloadTooLarge, UnsupportedMediaType, MalformedRequest or
    UnsupportedValue. The event is returned as it came unless its body had to
    be decoded (base64, a declared charset) or its Content-Type spelled
    differently (``Application/JSON; charset=utf-8``): Powertools compares the
    header case-sensitively, so it gets the plain ``application/json``.
    """
    _check_parameters(event)
    body = event.get("body")
    if not body:
        return event
    content_type = ""
    for name, value in (event.get("headers") or {}).items():
        if str(name).lower() == "content-type":
            content_type = str(value)
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    # Without this, a form-encoded body (curl -d without a Content-Type) would
    # be parsed as a form and answered with baffling field errors.
    if media_type and not _is_json(media_type):
        raise UnsupportedMediaType(
            f"send the body as JSON with 'Content-Type: application/json', not '{media_type}'"
        )
    charset = _charset(parameters)
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(str(body), validate=True)
        except (binascii.Error, ValueError):
            raise MalformedRequest("the request body is not valid base64") from None
        _check_size(len(raw), max_body_bytes)
        text = decode_text(raw, charset or "utf-8")
    else:
        # API Gateway hands text bodies over as UTF-8 already decoded; a
        # declared charset cannot be applied again.
        try:
            size = len(str(body).encode())
        except UnicodeEncodeError:
            raise MalformedRequest(
                "the request body is not valid UTF-8",
                details=[{"field": "body", "type": "encoding", "message": "not valid UTF-8"}],
            ) from None
        _check_size(size, max_body_bytes)
        text = str(body)
        if content_type in ("", "application/json"):
            return event
    return _with_json_body(event, text)


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            try:
                codecs.lookup(charset)
            except LookupError:
                raise UnsupportedMediaType(
                    f"charset '{charset[:40]}' is not one Mailroom can decode; send UTF-8"
                ) from None
            return charset
    return None


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(
            f"the request body is larger than {limit} bytes", details=[{"limit_bytes": limit}]
        )


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _with_json_body(event: Mapping[str, Any], text: str) -> dict[str, Any]:
    headers = {
        name: value
        for name, value in (event.get("headers") or {}).items()
        if str(name).lower() != "content-type"
    }
    multi = {
        name: value
        for name, value in (event.get("multiValueHeaders") or {}).items()
        if str(name).lower() != "content-type"
    }
    headers["Content-Type"] = "application/json"
    multi["Content-Type"] = ["application/json"]
    return {
        **event,
        "body": text,
        "isBase64Encoded": False,
        "headers": headers,
        "multiValueHeaders": multi,
    }


def _check_parameters(event: Mapping[str, Any]) -> None:
    """NUL and lone surrogates in the path, query string or headers: 422, named."""
    checks: list[tuple[str, Any]] = [
        ("query", event.get("multiValueQueryStringParameters")),
        ("query", event.get("queryStringParameters")),
        ("path", event.get("pathParameters")),
        ("header", event.get("headers")),
    ]
    for where, values in checks:
        if not values:
            continue
        for name, value in values.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    _check_text(f"{where}.{name}", item)
            if isinstance(name, str):
                _check_text(where, name, what="a name")
    path = event.get("path")
    if isinstance(path, str):
        _check_text("path", path)
