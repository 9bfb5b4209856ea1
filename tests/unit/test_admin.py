"""The admin bearer token."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from mailroom.bootstrap import bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.admin import AdminGate, admin_routes
from mailroom.entrypoints.api import create_api
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.fakes import FakeUnitOfWork, PlainHasher, RecordingQueue

TOKEN = "s3cret-admin-token-with-enough-entropy-0123"


def _whoami(authorization: str | None, configured: str | None) -> tuple[int, dict[str, object]]:
    services = bootstrap(
        Settings(templates_dir=Path("templates"), admin_token_sha256=configured),
        uow=FakeUnitOfWork,
        hasher=PlainHasher(),
        queue=RecordingQueue(),
        health_probes={},
    )
    app = create_api(admin_routes(lambda: services), max_request_bytes=lambda: 1024)
    event = load_event("status/health")
    event["path"] = event["resource"] = "/admin/whoami"
    with_headers(event, Authorization=authorization)
    response = app.resolve(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


HASH = hashlib.sha256(TOKEN.encode()).hexdigest()


def test_the_configured_token_is_admitted() -> None:
    assert _whoami(f"Bearer {TOKEN}", HASH) == (200, {"role": "admin"})


@pytest.mark.parametrize(
    ("authorization", "configured"),
    [
        (None, HASH),
        ("Bearer wrong", HASH),
        (f"Basic {TOKEN}", HASH),
        ("Bearer ", HASH),
        (f"Bearer {TOKEN}", None),  # nothing configured: nobody is admin
        (f"Bearer {HASH}", HASH),  # the hash itself is not the token
    ],
)
def test_anything_else_is_401(authorization: str | None, configured: str | None) -> None:
    status, body = _whoami(authorization, configured)
    assert status == 401
    assert body["error"]["code"] == "unauthorized"  # type: ignore[index]


def test_settings_refuse_a_hash_that_is_not_sha256_hex() -> None:
    with pytest.raises(ValueError, match="admin_token_sha256"):
        Settings(admin_token_sha256="not-a-hash")


def _admin_app(gated: bool) -> Any:
    services = bootstrap(
        Settings(templates_dir=Path("templates"), admin_token_sha256=HASH),
        uow=FakeUnitOfWork,
        hasher=PlainHasher(),
        queue=RecordingQueue(),
        health_probes={},
    )
    gate = AdminGate(lambda: services) if gated else None
    return create_api(
        admin_routes(lambda: services), max_request_bytes=lambda: 4096, admin_gate=gate
    )


def _call(app: Any, method: str, path: str, body: Any, token: str | None) -> tuple[int, str]:
    event = load_event("status/health")
    event["httpMethod"] = method
    event["path"] = event["resource"] = path
    with_headers(event, Authorization=f"Bearer {token}" if token else None)
    if body is not None:
        with_body(event, body)
    response = app.resolve(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])["error"]["code"]


def test_without_the_token_an_admin_route_says_401_before_it_looks_at_the_body() -> None:
    # GIVEN the admin function's resolver (gated) and a body no route would accept
    app = _admin_app(gated=True)
    bad = {"name": "", "rate_limit": "lots", "unknown": True}
    # WHEN it comes without the token THEN 401, never the fields' 422 details
    assert _call(app, "POST", "/admin/clients", bad, None) == (401, "unauthorized")
    assert _call(app, "POST", "/admin/clients", bad, "wrong") == (401, "unauthorized")
    # AND with the token the same body is the 422 it always was
    assert _call(app, "POST", "/admin/clients", bad, TOKEN) == (422, "validation_error")
    # AND a method the path does not take is 405 for anyone
    assert _call(app, "PUT", "/admin/clients", None, None)[0] == 405
    # AND without the gate (an app built otherwise) the field errors come first
    assert _call(_admin_app(gated=False), "POST", "/admin/clients", bad, None)[0] == 422


def test_the_admin_health_probe_needs_no_token_behind_the_gate() -> None:
    app = _admin_app(gated=True)
    event = load_event("status/health")
    event["path"] = event["resource"] = "/admin/health"
    assert app.resolve(event, FakeLambdaContext())["statusCode"] == 200
