"""JSON as RFC 8259 defines it, holding only what Mailroom can store.

``parse_json`` is ``json.loads`` made strict, for every JSON that comes from
outside (API bodies through entrypoints/request_body.py, provider webhooks):

- ``NaN`` and ``Infinity`` are Python's extensions, not JSON (MalformedRequest);
- no string (key or value) may hold a NUL (PostgreSQL text and JSONB cannot)
  or a lone surrogate (not encodable as UTF-8); no number may overflow a
  float (``1e400``) or exceed Python's 4,300-digit int limit; nothing may be
  nested deeper than ``MAX_JSON_DEPTH`` (UnsupportedValue, naming the field).

The checks that walk the parsed value run only when the text could hold what
they look for: a ``\\u`` escape (the only way JSON text can spell a NUL or a
lone surrogate), or nesting past the depth limit, which is measured on the
text's brackets without walking the value (``_nests_deeper_than``), so an
ordinary request, however many items it lists, pays a few scans in C.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from mailroom.domain.errors import MalformedRequest, UnsupportedValue

# The deepest a JSON body may nest, counting the body itself: props, metadata
# and template schemas are well inside it; Python's own parser and
# jsonschema recurse, so a deeper document is refused before they see it.
MAX_JSON_DEPTH = 64
# Python refuses to convert longer decimal strings to int (CVE-2020-10735).
MAX_INT_DIGITS = 4300

SURROGATE = re.compile("[\ud800-\udfff]")


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
    if "\\u" in text or (
        text.count("[") + text.count("{") > MAX_JSON_DEPTH
        and _nests_deeper_than(text, MAX_JSON_DEPTH)
    ):
        _check_value(value)
    return value


# A JSON string (the text parsed already, so it is well formed): brackets in
# strings are not structure.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
# An array or object holding no other: the innermost containers.
_INNERMOST = re.compile(r"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")


def _nests_deeper_than(text: str, limit: int) -> bool:
    """Whether valid JSON ``text`` nests deeper than ``limit``, from its brackets alone.

    Each pass removes every innermost container, so after ``limit`` passes
    a bracket is left only if some container held ``limit`` levels inside
    it. A batch body (100 items, or 10,000 recipients, issue 17) has
    hundreds of brackets but few levels: this is a few regex passes, where
    walking the parsed value visited every string and key in Python (about
    100 ms of a 10,000-recipient POST /v1/batches).
    """
    skeleton = _STRING.sub("", text)
    for _ in range(limit):
        skeleton, removed = _INNERMOST.subn("", skeleton)
        if not removed:
            return False
    return "[" in skeleton or "{" in skeleton


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
            check_text(path or "body", item)
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep(path or "body")
            if isinstance(item, dict):
                for key, child in item.items():
                    check_text(path or "body", key, what="a key")
                    stack.append((child, f"{path}.{key}" if path else key, depth + 1))
            else:
                for index, child in enumerate(item):
                    stack.append((child, f"{path}.{index}" if path else str(index), depth + 1))
        elif item is _TOO_MANY_DIGITS or (isinstance(item, float) and math.isinf(item)):
            raise _out_of_range(path or "body")


def check_text(field: str, text: str, *, what: str = "the value") -> None:
    """UnsupportedValue naming ``field`` if ``text`` holds a NUL or a lone surrogate."""
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
    if not text.isascii() and SURROGATE.search(text):
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
