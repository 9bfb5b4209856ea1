"""The committed OpenAPI document matches the routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mailroom.bootstrap import default_services
from mailroom.domain.commands import SendRequest
from mailroom.domain.tenancy import Scope
from mailroom.entrypoints.admin_clients import CreateClientRequest
from mailroom.entrypoints.api import docs_api, served_from
from mailroom.entrypoints.openapi_document import committed_form
from tests.events import FakeLambdaContext, load_event, with_headers

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_document_is_current() -> None:
    # GIVEN the document generated from the routes now
    current = committed_form()
    # THEN docs/openapi.json is the same; regenerate it with `make openapi`
    assert COMMITTED.read_text() == current, "docs/openapi.json is stale: run `make openapi`"


def test_document_describes_every_public_route() -> None:
    document = json.loads(committed_form())
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) >= {
        "/v1/send",
        "/v1/messages/{message_id}",
        "/health",
        "/webhooks/health",
        "/admin/health",
    }
    send = document["paths"]["/v1/send"]["post"]
    assert "SendRequest" in json.dumps(send["requestBody"])
    assert {"apiKey", "apiSecret"} <= set(document["components"]["securitySchemes"])


def test_swagger_ui_is_served_with_the_whole_document() -> None:
    # GIVEN the docs resolver the status function serves /docs from
    app = docs_api(default_services)
    event = load_event("status/health")
    event["path"] = event["resource"] = "/docs"
    # WHEN /docs is asked for
    response = app.resolve(event, FakeLambdaContext())
    # THEN it is the Swagger UI page, with the API's security schemes in it
    # (without them Powertools refused to build the page: 500)
    assert response["statusCode"] == 200
    assert "swagger-ui" in response["body"]
    assert "X-Api-Secret" in response["body"]


# Issue 14, item 8: the document tells the truth.

PUBLIC_PATHS = {
    "/health",
    "/webhooks/health",
    "/webhooks/{provider}",
    "/u/{token}",  # RFC 8058 one-click unsubscribe: the token authenticates
    "/t/{file}",  # issue 21: the tracking pixel and links; the random token is all
    "/c/{token}",
    "/admin/health",
    "/openapi.json",
    # Probes (issue 23): readiness and liveness ask for no credentials.
    "/ready",
    "/live",
}
# Operator routes outside /admin/ that take the admin token (issue 23).
ADMIN_TOKEN_PATHS = {"/health/detailed"}
# Issue 23's probes answer 503 with their own report, as /health does.
OWN_REPORT_503 = {"/health/detailed": "DetailedHealthView", "/ready": "ReadyView"}
# /v1 routes any valid key may call, whatever its scopes (issue 23).
ANY_KEY_PATHS = {"/v1/info"}
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(committed_form())
    return document


def test_each_route_declares_the_auth_it_needs_and_public_routes_none() -> None:
    # GIVEN the document
    document = _document()
    # THEN nothing is required API-wide: each operation says what it needs
    assert "security" not in document
    for path, method, operation in _operations(document):
        security = operation.get("security")
        if path in PUBLIC_PATHS:
            assert not security, f"{method} {path} is public"
        elif path in ANY_KEY_PATHS:
            assert security == [{"apiKey": [], "apiSecret": []}, {"clientToken": []}], path
        elif path.startswith("/v1/"):
            # ... and a /v1 route names the one scope a key needs for it
            assert security is not None, f"{method} {path}"
            assert len(security) == 2, f"{method} {path}"
            scopes = security[0]["apiKey"]
            expected = [{"apiKey": scopes, "apiSecret": scopes}, {"clientToken": scopes}]
            assert security == expected, f"{method} {path}"
            assert len(scopes) == 1, f"{method} {path}"
            assert scopes[0] in {scope.value for scope in Scope}, f"{method} {path}"
        else:
            assert path.startswith("/admin/") or path in ADMIN_TOKEN_PATHS, path
            assert security == [{"adminToken": []}], f"{method} {path}"


def test_every_error_answer_is_the_real_error_body() -> None:
    document = _document()
    schemas = document["components"]["schemas"]
    # THEN Powertools' FastAPI-style validation shapes are gone
    assert not {"HTTPValidationError", "ValidationError", "ResponseValidationError"} & set(schemas)
    assert schemas["ErrorBody"]["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message", "details"}
    for path, method, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            # Health answers 503 with its own report: probes read the checks.
            expected = (
                {"$ref": "#/components/schemas/HealthView"}
                if path.endswith("/health") or path == "/health"
                else ERROR_BODY
            )
            if status == "503" and path in OWN_REPORT_503:
                expected = {"$ref": f"#/components/schemas/{OWN_REPORT_503[path]}"}
            assert schema == expected, f"{method} {path} {status}"


def test_every_route_documents_what_the_machinery_in_front_of_it_answers() -> None:
    document = _document()
    for path, method, operation in _operations(document):
        statuses = set(operation["responses"])
        label = f"{method.upper()} {path}"
        if path.startswith("/v1/"):
            # The client gate: credentials, suspension, rate limit, Redis down
            assert {"401", "403", "429", "503"} <= statuses, label
        if path.startswith("/admin/") and path != "/admin/health":
            assert {"401", "503"} <= statuses, label
        # Provider webhooks and one-click unsubscribe (RFC 8058: any body) read no JSON.
        if "requestBody" in operation and path not in {"/webhooks/{provider}", "/u/{token}"}:
            # Malformed JSON, too large, not JSON, invalid
            assert {"400", "413", "415", "422"} <= statuses, label
        if "{" in path:
            assert "404" in statuses, label
    send = document["paths"]["/v1/send"]["post"]["responses"]
    assert set(send) == {"202", "400", "401", "403", "409", "413", "415", "422", "429", "503"}
    assert send["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Accepted"
    }


def test_a_route_without_parameters_or_body_documents_no_validation_error() -> None:
    # GIVEN routes nothing can be invalid on
    paths = _document()["paths"]
    # THEN no 422 is promised (Powertools put one on every route)
    for path, method in [("/admin/whoami", "get"), ("/webhooks/health", "get"), ("/health", "get")]:
        assert "422" not in paths[path][method]["responses"], path


def test_recipients_are_documented_as_one_address_or_a_list() -> None:
    properties = _document()["components"]["schemas"]["SendRequest"]["properties"]
    for field in ("to", "cc", "bcc", "reply_to"):
        variants = properties[field]["anyOf"]
        assert {"type": "string"} in variants, field
        assert any(v.get("type") == "array" for v in variants), field
    to_list = next(v for v in properties["to"]["anyOf"] if v.get("type") == "array")
    assert to_list["minItems"] == 1


@pytest.mark.parametrize("value", [True, "2", 2.5])
def test_an_integer_field_takes_only_integers_as_documented(value: Any) -> None:
    # GIVEN a send pinning a template version with a JSON true, a string or a fraction
    body = {"template": "welcome", "to": "ada@example.com", "template_version": value}
    # THEN it is refused, as "integer" in the document says (lax pydantic took true as 1)
    with pytest.raises(ValidationError):
        SendRequest.model_validate(body)
    with pytest.raises(ValidationError):
        CreateClientRequest.model_validate({"name": "acme", "rate_limit": value})


def test_served_document_names_the_url_it_was_served_from() -> None:
    # GIVEN the docs resolver and a request for /openapi.json through API Gateway's stage
    app = docs_api(default_services)
    event = with_headers(load_event("status/health"), Host="api.example.com")
    event["path"] = event["resource"] = "/openapi.json"
    event["requestContext"]["path"] = "/dev/openapi.json"
    # WHEN it is served
    response = app.resolve(event, FakeLambdaContext())
    # THEN its server is that host and stage, and the whole document is there
    assert response["statusCode"] == 200
    document = json.loads(response["body"])
    assert document["servers"] == [
        {"url": "https://api.example.com/dev", "description": "where this document was served from"}
    ]
    assert "/v1/send" in document["paths"]
    assert "ErrorBody" in document["components"]["schemas"]


def test_served_from_the_local_runner_names_its_host_and_port() -> None:
    # GIVEN a request as the local runner builds it (no stage in the path)
    event = with_headers(
        load_event("status/health"), Host="127.0.0.1:43117", X_Forwarded_Proto="http"
    )
    event["path"] = event["resource"] = event["requestContext"]["path"] = "/openapi.json"
    # THEN the base URL is the runner's
    assert served_from(event) == "http://127.0.0.1:43117"


def test_committed_document_keeps_the_local_runner_default_as_its_server() -> None:
    assert _document()["servers"][0]["url"] == "http://127.0.0.1:3000"


def test_client_answers_document_the_rate_limit_headers_and_429_its_retry_after() -> None:
    paths = _document()["paths"]
    for path in ("/v1/send", "/v1/messages", "/v1/messages/{message_id}"):
        operation = next(iter(paths[path].values()))
        responses = operation["responses"]
        ok = next(r for s, r in responses.items() if s.startswith("2"))
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
            ok["headers"]
        ), path
        assert responses["429"]["headers"]["Retry-After"]["required"] is True, path
        # A 401 comes before any bucket is consulted
        assert "headers" not in responses["401"], path
