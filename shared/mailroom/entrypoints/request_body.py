"""Reading a request, strictly, in one place: bytes to text, text to JSON, parameters.

Every route of the client API and the admin API is read through here:
``MailroomApi`` passes ``parse_json`` (domain/strict_json.py) to Powertools
as its body deserializer and runs ``prepare_event`` before routing. So no
route has its own checks, and no odd input reaches PostgreSQL, Redis or a
template as something they would choke on (a 500):

- the body must be UTF-8, or the charset its Content-Type declares (400
  ``malformed_json`` if it does not decode); its media type JSON in any
  spelling (``Application/JSON; charset=utf-8``), or 415;
- the body must be strict JSON (see domain/strict_json.py): 400
  ``malformed_json``, or 422 ``unsupported_value`` naming the field;
- query strings, path parameters and header values may not hold a NUL or a
  lone surrogate either (422 ``unsupported_value``).

A route that reads its body as text in another media type (the suppression
import takes CSV and JSON lines) says so in its decorator with
``TextBody(...).openapi_extensions()``: the document then describes that body,
and ``MailroomApi`` hands the declaration to ``prepare_event``, which accepts
those media types (and only those) for that route, up to the route's own size
limit, still refusing undecodable bytes (400 ``malformed_body``), a NUL
(422 ``unsupported_value``) and oversize bodies (413) the same way.
"""

from __future__ import annotations

import base64
import binascii
import codecs
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mailroom.domain.errors import (
    MalformedRequest,
    PayloadTooLarge,
    UnreadableBody,
    UnsupportedMediaType,
)
from mailroom.domain.strict_json import MAX_INT_DIGITS as MAX_INT_DIGITS
from mailroom.domain.strict_json import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from mailroom.domain.strict_json import SURROGATE, check_text, decode_text
from mailroom.domain.strict_json import parse_json as parse_json

# The key a TextBody declaration is kept under in the route's OpenAPI extensions.
TEXT_BODY_EXTENSION = "x-mailroom-text-body"


@dataclass(frozen=True, slots=True)
class TextBody:
    """A route's declaration: its body is text in one of ``media_types``, not JSON."""

    media_types: tuple[str, ...]
    max_bytes: int
    description: str
    # (media type, example body): shown in the document, and sent by the fuzz run.
    examples: tuple[tuple[str, str], ...] = ()

    def openapi_extensions(self) -> dict[str, Any]:
        """For the route decorator's ``openapi_extensions``: the request body, documented."""
        examples = dict(self.examples)
        content: dict[str, Any] = {}
        for media in self.media_types:
            content[media] = {"schema": {"type": "string"}}
            if media in examples:
                content[media]["example"] = examples[media]
        return {
            "requestBody": {"required": True, "description": self.description, "content": content},
            TEXT_BODY_EXTENSION: {
                "media_types": list(self.media_types),
                "max_bytes": self.max_bytes,
            },
        }

    @classmethod
    def of_route(cls, extensions: Mapping[str, Any] | None) -> TextBody | None:
        declared = (extensions or {}).get(TEXT_BODY_EXTENSION)
        if not declared:
            return None
        body = (extensions or {}).get("requestBody") or {}
        return cls(
            media_types=tuple(declared["media_types"]),
            max_bytes=int(declared["max_bytes"]),
            description=str(body.get("description", "")),
            examples=tuple(
                (media, str(spec["example"]))
                for media, spec in (body.get("content") or {}).items()
                if "example" in spec
            ),
        )


def prepare_event(
    event: Mapping[str, Any],
    max_body_bytes: int,
    text_body: Callable[[], TextBody | None] = lambda: None,
) -> Mapping[str, Any]:
    """The event as the routes may read it: parameters checked, the body JSON text.

    ``text_body`` names the route's TextBody declaration, if it has one; it is
    asked only for a body that is not JSON, so JSON requests pay no lookup.

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
    declared = None if _is_json(media_type) else text_body()
    if declared is not None:
        return _with_text_body(event, media_type, parameters, declared)
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


def _with_text_body(
    event: Mapping[str, Any], media_type: str, parameters: str, declared: TextBody
) -> dict[str, Any]:
    """The body as text of one of the declared media types, checked as strictly as JSON is."""
    if media_type not in declared.media_types:
        accepted = "' or '".join(declared.media_types)
        raise UnsupportedMediaType(
            f"send the body with 'Content-Type: {accepted}', not '{media_type or 'none'}'",
            details=[{"accepted": list(declared.media_types)}],
        )
    charset = _charset(parameters) or "utf-8"
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(str(body), validate=True)
        except (binascii.Error, ValueError):
            raise MalformedRequest("the request body is not valid base64") from None
        _check_size(len(raw), declared.max_bytes)
        try:
            text = raw.decode(charset)
        except UnicodeDecodeError:
            raise _unreadable(charset) from None
    else:
        # Already decoded by API Gateway (as for JSON): the charset was applied.
        text = str(body)
        try:
            _check_size(len(text.encode()), declared.max_bytes)
        except UnicodeEncodeError:
            raise _unreadable("utf-8") from None
    # A NUL (or a surrogate a charset decoded to) could not be stored anyway.
    check_text("body", text)
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
    headers["Content-Type"] = media_type
    multi["Content-Type"] = [media_type]
    return {
        **event,
        "body": text,
        "isBase64Encoded": False,
        "headers": headers,
        "multiValueHeaders": multi,
    }


def _unreadable(charset: str) -> UnreadableBody:
    return UnreadableBody(
        f"the request body is not valid {charset}",
        details=[{"field": "body", "type": "encoding", "message": f"not valid {charset}"}],
    )


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
        if values and not _clean(values):
            _name_the_parameter(where, values)
    path = event.get("path")
    if isinstance(path, str):
        check_text("path", path)


def _clean(values: Mapping[str, Any]) -> bool:
    """True if no name or value holds a NUL or a surrogate: one C-speed scan per map.

    Every request pays this, so it joins the strings instead of checking them
    one by one (a Python call per header costs more than the scan).
    """
    try:
        joined = "".join(values) + "".join(
            value if isinstance(value, str) else "".join(value) for value in values.values()
        )
    except TypeError:  # not all strings: let the slow path look
        return False
    return "\x00" not in joined and (joined.isascii() or not SURROGATE.search(joined))


def _name_the_parameter(where: str, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                check_text(f"{where}.{name}", item)
        if isinstance(name, str):
            check_text(where, name, what="a name")
