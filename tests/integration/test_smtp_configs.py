"""Clients' own SMTP relays (issue 20, item 4) on real PostgreSQL and aiosmtpd relays:
the routes, the password sealed and never shown, the step-by-step test."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.smtp_configs import smtp_config_routes
from mailroom.services import smtp_configs as relays
from tests.events import FakeLambdaContext, request_event
from tests.fakes import RecordingQueue
from tests.integration.conftest import free_port
from tests.integration.provider_doubles import SwitchableSmtp

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-for-smtp-configs"
PASSWORD = "s3cret-relay-pw-7f1c2b"


class Stack:
    def __init__(self, database_url: str, redis_url: str, keys: str | None = None) -> None:
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            secrets_encryption_keys=SecretStr(keys or SecretKeyring.generate_setting()),
        )
        self.queue = RecordingQueue()
        self.services: Services = bootstrap(self.settings, queue=self.queue)
        provider = lambda: self.services  # noqa: E731 - the routes take a provider
        self.api = create_api(
            [send_routes(provider), smtp_config_routes(provider)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
            client_gate=ClientGate(provider),
        )
        self.admin_api = create_api(
            admin_routes(provider), max_request_bytes=lambda: self.settings.max_request_bytes
        )

    def call(
        self, method: str, path: str, client: dict[str, Any], body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        event = request_event(
            method, path, body=body, X_Api_Key=client["key"], X_Api_Secret=client["secret"]
        )
        answer = self.api.resolve(event, FakeLambdaContext())
        return answer["statusCode"], json.loads(answer["body"])

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        event = request_event(method, path, body=body, Authorization=f"Bearer {ADMIN_TOKEN}")
        answer = self.admin_api.resolve(event, FakeLambdaContext())
        return answer["statusCode"], json.loads(answer["body"])

    def client(self) -> dict[str, Any]:
        status, body = self.admin("POST", "/admin/clients", {"name": f"c-{uuid.uuid4().hex[:8]}"})
        assert status == 201, body
        return {**body, "key": body["api_key"], "secret": body["api_secret"]}


@pytest.fixture
def stack(database: Database, database_url: str, redis_url: str) -> Stack:
    return Stack(database_url, redis_url)


@pytest.fixture
def relay() -> Iterator[SwitchableSmtp]:
    server = SwitchableSmtp(credentials=("relay-user", PASSWORD)).start()
    yield server
    server.stop()


def relay_body(server: SwitchableSmtp, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "transactional",
        "host": server.host,
        "port": server.port,
        "security": "none",
        "username": "relay-user",
        "password": PASSWORD,
        "timeout_seconds": 2,
    }
    body.update(changes)
    return body


def test_a_relay_is_created_listed_changed_and_deleted_without_its_password_showing(
    stack: Stack, relay: SwitchableSmtp, database: Database
) -> None:
    # GIVEN a client
    client = stack.client()
    # WHEN it adds a relay
    status, created = stack.call("POST", "/v1/smtp-configs", client, relay_body(relay))
    # THEN it is created with an id, and the password is said to be set, never shown
    assert status == 201, created
    assert created["password_set"] is True
    assert PASSWORD not in json.dumps(created)
    config_id = created["id"]
    # AND it is stored sealed, not in the clear
    with database.engine.connect() as connection:
        stored = connection.execute(
            text("SELECT sealed_password FROM smtp_configs WHERE id = :id"), {"id": config_id}
        ).scalar_one()
    assert stored.startswith("v1.")
    assert PASSWORD not in stored
    # WHEN it lists, reads and changes it
    status, listed = stack.call("GET", "/v1/smtp-configs", client)
    assert status == 200
    assert [c["id"] for c in listed["smtp_configs"]] == [config_id]
    status, changed = stack.call(
        "PATCH", f"/v1/smtp-configs/{config_id}", client, {"port": 2525, "default": True}
    )
    # THEN the change is kept, the password with it
    assert status == 200, changed
    assert (changed["port"], changed["default"], changed["password_set"]) == (2525, True, True)
    status, read = stack.call("GET", f"/v1/smtp-configs/{config_id}", client)
    assert read["port"] == 2525
    # AND another client sees none of it
    other = stack.client()
    assert stack.call("GET", f"/v1/smtp-configs/{config_id}", other)[0] == 404
    assert stack.call("GET", "/v1/smtp-configs", other)[1] == {"smtp_configs": []}
    # WHEN it deletes it
    status, _ = stack.call("DELETE", f"/v1/smtp-configs/{config_id}", client)
    assert status == 200
    assert stack.call("GET", f"/v1/smtp-configs/{config_id}", client)[0] == 404


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"port": 0}, 422, "validation_error"),
        ({"port": 70000}, 422, "validation_error"),
        ({"security": "ssl"}, 422, "validation_error"),
        ({"host": "mail example.com"}, 422, "validation_error"),
        ({"host": "relay\r\n.example"}, 422, "validation_error"),
        ({"username": None}, 422, "validation_error"),  # a password needs a username
        ({"pool_size": 0}, 422, "validation_error"),
        ({"timeout_seconds": 0}, 422, "validation_error"),
        ({"name": "Has Spaces"}, 422, "validation_error"),
        ({"throttle_per_minute": {"hotmail": 5}}, 422, "validation_error"),
        ({"throttle_per_minute": {"gmail": 0}}, 422, "validation_error"),
        ({"surprise": 1}, 422, "validation_error"),
    ],
)
def test_bad_relay_input_is_a_clear_4xx_and_nothing_is_written(
    stack: Stack, relay: SwitchableSmtp, changes: dict[str, Any], status: int, code: str
) -> None:
    # GIVEN a client
    client = stack.client()
    # WHEN it adds a relay with one bad field
    answer_status, answer = stack.call(
        "POST", "/v1/smtp-configs", client, relay_body(relay, **changes)
    )
    # THEN it is refused, saying why, and nothing is stored
    assert answer_status == status, answer
    assert answer["error"]["code"] == code
    assert stack.call("GET", "/v1/smtp-configs", client)[1] == {"smtp_configs": []}


def test_a_second_relay_of_the_same_name_is_409(stack: Stack, relay: SwitchableSmtp) -> None:
    client = stack.client()
    assert stack.call("POST", "/v1/smtp-configs", client, relay_body(relay))[0] == 201
    status, answer = stack.call("POST", "/v1/smtp-configs", client, relay_body(relay))
    assert status == 409
    assert answer["error"]["code"] == "smtp_config_name_taken"


def test_the_relay_test_reports_each_step(
    stack: Stack,
    relay: SwitchableSmtp,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    client = stack.client()
    # GIVEN a good relay, one with a wrong password, and one nothing listens on
    good = stack.call("POST", "/v1/smtp-configs", client, relay_body(relay))[1]["id"]
    bad = stack.call(
        "POST",
        "/v1/smtp-configs",
        client,
        relay_body(relay, name="wrong-password", password="not-the-password"),
    )[1]["id"]
    dead = stack.call(
        "POST",
        "/v1/smtp-configs",
        client,
        relay_body(relay, name="nobody-home", port=free_port()),
    )[1]["id"]
    # WHEN each is tested
    _, good_result = stack.call("POST", f"/v1/smtp-configs/{good}/test", client)
    _, bad_result = stack.call("POST", f"/v1/smtp-configs/{bad}/test", client)
    status, dead_result = stack.call("POST", f"/v1/smtp-configs/{dead}/test", client)
    # THEN the good one passes connect, EHLO and AUTH
    assert good_result["ok"] is True, good_result
    assert [s["step"] for s in good_result["steps"]] == ["connect", "ehlo", "auth"]
    # AND the bad password fails at AUTH, after a good connect and EHLO
    assert bad_result["ok"] is False
    assert bad_result["failed_step"] == "auth"
    assert bad_result["steps"][-1]["detail"].startswith("535")
    # AND the unreachable one at connect
    assert status == 200
    assert dead_result["failed_step"] == "connect"
    # AND no password was ever logged
    logged = caplog.text + "".join(capsys.readouterr())
    assert PASSWORD not in logged
    assert "not-the-password" not in logged


def test_starttls_asked_of_a_relay_without_it_fails_at_that_step(
    stack: Stack, relay: SwitchableSmtp
) -> None:
    client = stack.client()
    config = stack.call("POST", "/v1/smtp-configs", client, relay_body(relay, security="starttls"))[
        1
    ]["id"]
    _, result = stack.call("POST", f"/v1/smtp-configs/{config}/test", client)
    assert result["failed_step"] == "starttls"
    assert [s["step"] for s in result["steps"]] == ["connect", "ehlo", "starttls"]


def test_passwords_reseal_under_a_new_key_and_still_open(
    database: Database, database_url: str, redis_url: str, relay: SwitchableSmtp
) -> None:
    # GIVEN a relay whose password was sealed under key k1
    old = SecretKeyring.generate_setting("k1")
    before = Stack(database_url, redis_url, keys=old)
    client = before.client()
    config_id = uuid.UUID(
        before.call("POST", "/v1/smtp-configs", client, relay_body(relay))[1]["id"]
    )
    # WHEN k2 is listed first (k1 after it) and the operator reseals every password
    after = Stack(database_url, redis_url, keys=f"{SecretKeyring.generate_setting('k2')},{old}")
    keyring = after.settings.secret_keyring
    assert after.admin("POST", "/admin/smtp-configs/reseal") == (
        200,
        {"resealed": 1, "current_key": "k2"},
    )
    # THEN it is sealed under k2 and opens to the same password
    config = relays.get_config(after.services.uow(), None, config_id)
    assert config.sealed_password is not None
    assert config.sealed_password.split(".")[1] == "k2"
    assert relays.open_password(keyring, config) == PASSWORD
    # AND k1 alone no longer opens it, and a second run has nothing to do
    with pytest.raises(Exception, match="not configured"):
        relays.open_password(SecretKeyring.from_setting(old), config)
    assert relays.reseal_all(after.services.uow(), keyring) == 0
    # AND the relay's test still authenticates with it
    _, result = after.call("POST", f"/v1/smtp-configs/{config_id}/test", client)
    assert result["ok"] is True, result
