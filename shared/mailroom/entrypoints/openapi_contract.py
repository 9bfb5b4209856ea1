"""What the OpenAPI document promises about each route, and the step that makes it say so.

A route declares two things in its decorator: who may call it (``security``:
``client_key(scope)``, ``ADMIN_TOKEN``, or nothing for a public route) and, with
``answers()``, its success answer plus the errors only it gives (404 for a
missing message, 409 for a read-only template...). ``finish_document`` then
adds what every route of the same kind can answer, from facts the document
already holds: the security requirement (401, 403, 429, 503), a request body
(400, 413, 415, 422), parameters (422) and path parameters (404), plus the
rate-limit headers of client answers and ``Retry-After`` on 429. It also
replaces Powertools' FastAPI-style ``HTTPValidationError`` with the error body
Mailroom really sends. So a new route cannot forget the statuses the
machinery in front of it produces, and the document is never edited by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, Field

from mailroom.domain.tenancy import Scope

JSON = "application/json"
SCHEMA_PREFIX = "#/components/schemas/"


# Security requirements, by the schemes ``api.document_options`` declares.
def client_key(scope: Scope) -> list[dict[str, list[str]]]:
    """A /v1 route's requirement: a client key holding ``scope``, as a header pair or a token.

    OpenAPI 3.1 lets any security scheme list the scopes (roles) it needs.
    """
    return [
        {"apiKey": [scope.value], "apiSecret": [scope.value]},
        {"clientToken": [scope.value]},
    ]


ADMIN_TOKEN: list[dict[str, list[str]]] = [{"adminToken": []}]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable; branch on this.")
    message: str = Field(description="For humans; may change.")
    details: list[dict[str, Any]] = Field(
        description="Per-field problems (`field`, `type`, `message`) or other context."
    )


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the API, whatever refused the request."""

    error: ErrorDetail


def answers(
    status: int,
    description: str,
    model: type[BaseModel] | dict[str, Any] | None = None,
    *,
    errors: Mapping[int, str] | None = None,
) -> dict[int, OpenAPIResponse]:
    """A route's ``responses``: its success answer and the errors only this route gives.

    ``model`` is a pydantic model or a JSON Schema; without it the success
    schema is the handler's return annotation. Each error description should
    name the ``code`` values it covers.
    """
    success: OpenAPIResponse = {"description": description}
    if isinstance(model, dict):
        success["content"] = {JSON: {"schema": model}}
    elif model is not None:
        success["content"] = {JSON: {"model": model}}
    responses: dict[int, OpenAPIResponse] = {status: success}
    for error_status, error_description in (errors or {}).items():
        responses[error_status] = {
            "description": error_description,
            "content": {JSON: {"model": ErrorBody}},
        }
    return responses


def text_answers(
    status: int,
    description: str,
    media_types: tuple[str, ...],
    *,
    headers: Mapping[str, str] | None = None,
    errors: Mapping[int, str] | None = None,
) -> dict[int, OpenAPIResponse]:
    """``answers`` for a success whose body is text in one of ``media_types`` (a file).

    ``headers`` maps each header the success may carry to its description.
    """
    responses = answers(status, description, errors=errors)
    success = responses[status]
    success["content"] = {media: {"schema": {"type": "string"}} for media in media_types}
    if headers:
        success["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return responses


# The statuses a route reading a TextBody (request_body.py) answers for its body.
TEXT_BODY_ERRORS = {
    400: "malformed_body: the body does not decode in its charset (UTF-8 unless declared)",
    413: "payload_too_large: the body is larger than the route's limit",
    415: "unsupported_media_type: the body is declared as none of the accepted media types",
}


# What the machinery in front of a handler can answer, by what the operation has.
_CLIENT_KEY_ERRORS = {
    401: (
        "unauthorized: no credentials, or a wrong key or secret; invalid_token: a Bearer "
        "token that is not ours or fails its checksum; api_key_expired; api_key_revoked"
    ),
    403: (
        "client_suspended; insufficient_scope: the key lacks the scope this route names; "
        "ip_not_allowed: the caller's address is outside the key's allowlist"
    ),
    429: "rate_limited (or quota_exceeded on /v1/send); Retry-After says when to try again",
    503: "service_unavailable: PostgreSQL or Redis did not answer; try again",
}
_ADMIN_TOKEN_ERRORS = {
    401: "unauthorized: 'Authorization: Bearer <admin token>' missing or wrong",
    503: "service_unavailable: PostgreSQL or Redis did not answer; try again",
}
_BODY_ERRORS = {
    400: "malformed_json: the body is not valid JSON",
    413: "payload_too_large: the body is larger than MAX_REQUEST_BYTES",
    415: "unsupported_media_type: the body is declared as something other than JSON",
}
_INTEGER = {"type": "integer", "minimum": 0}
# On every answer to a client whose rate-limit bucket was consulted.
_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {"description": "Requests per minute", "schema": _INTEGER},
    "X-RateLimit-Remaining": {"description": "Requests left in the bucket", "schema": _INTEGER},
    "X-RateLimit-Reset": {"description": "Seconds until the bucket is full", "schema": _INTEGER},
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until a retry can succeed",
        "required": True,
        "schema": _INTEGER,
    }
}
_INVALID = "validation_error: a parameter or body field is invalid; `details` names each"
_NO_ROUTE = "route_not_found: no route matches (a path parameter holding '/' changes the path)"
# Powertools adds these for FastAPI-style validation answers Mailroom never gives.
_POWERTOOLS_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def finish_document(document: dict[str, Any]) -> dict[str, Any]:
    """The generated document with every status each operation can answer, in Mailroom's shape."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _POWERTOOLS_SCHEMAS:
        schemas.pop(name, None)
    schemas.update(_error_schemas())
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            _finish_operation(operation)
    return document


def _finish_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    declared_invalid = responses.get("422")
    if declared_invalid is not None and _is_powertools_default(declared_invalid):
        del responses["422"]
    for implied, description in sorted(_implied_errors(operation).items()):
        responses.setdefault(str(implied), _error_response(description))
    client_key = any("apiKey" in requirement for requirement in operation.get("security") or [])
    for status, response in responses.items():
        headers = response.setdefault("headers", {})
        # A 401 is answered before any rate-limit bucket is consulted.
        if client_key and status != "401":
            headers.update(_RATE_LIMIT_HEADERS)
        if status == "429":
            headers.update(_RETRY_AFTER)
        if not headers:
            del response["headers"]


def _implied_errors(operation: dict[str, Any]) -> dict[int, str]:
    schemes = {name for requirement in operation.get("security") or [] for name in requirement}
    parameters = operation.get("parameters") or []
    implied: dict[int, str] = {}
    if {"apiKey", "apiSecret"} & schemes:
        implied.update(_CLIENT_KEY_ERRORS)
    if "adminToken" in schemes:
        implied.update(_ADMIN_TOKEN_ERRORS)
    if _validated_body(operation):
        implied.update(_BODY_ERRORS)
        implied[422] = _INVALID
    if any(_can_be_invalid(parameter) for parameter in parameters):
        implied[422] = _INVALID
    if any(parameter.get("in") == "path" for parameter in parameters):
        implied[404] = _NO_ROUTE
    return implied


def _validated_body(operation: dict[str, Any]) -> bool:
    """A JSON body checked against a model: the client API's resolver refuses it four ways.

    A raw body (the webhooks' signed payloads, any media type) has no model.
    """
    content = (operation.get("requestBody") or {}).get("content") or {}
    return any("$ref" in json.dumps(media.get("schema", {})) for media in content.values())


def _can_be_invalid(parameter: dict[str, Any]) -> bool:
    """Whether validation can refuse this parameter: anything but a free string."""
    schema = parameter.get("schema") or {}
    return schema.get("type") != "string" or len(set(schema) - {"type", "title"}) > 0


def _is_powertools_default(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get(JSON, {}).get("schema", {})
    return schema.get("$ref") in {SCHEMA_PREFIX + name for name in _POWERTOOLS_SCHEMAS}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": SCHEMA_PREFIX + "ErrorBody"}}},
    }


def _error_schemas() -> dict[str, Any]:
    schema = ErrorBody.model_json_schema(ref_template=SCHEMA_PREFIX + "{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, "ErrorBody": schema}
