"""The committed OpenAPI document matches the routes."""

from __future__ import annotations

import json
from pathlib import Path

from mailroom.bootstrap import default_services
from mailroom.entrypoints.api import docs_api
from mailroom.entrypoints.openapi_document import committed_form
from tests.events import FakeLambdaContext, load_event

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
