"""The admin bearer token."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mailroom.bootstrap import bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api
from tests.events import FakeLambdaContext, load_event, with_headers
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
