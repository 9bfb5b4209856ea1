"""The committed OpenAPI document matches the routes."""

from __future__ import annotations

import json
from pathlib import Path

from mailroom.entrypoints.openapi_document import committed_form

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
