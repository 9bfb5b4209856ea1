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
from mailroom.domain.tenancy import SYSTEM_ACTOR
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.queues import queue_routes
from mailroom.entrypoints.smtp_configs import smtp_config_routes
from mailroom.services import smtp_configs as relays
from tests.events import FakeLambdaContext, request_event
from tests.fakes import RecordingQueue
from tests.integration.conftest import SmtpSink, free_port
from tests.integration.provider_doubles import SwitchableSmtp

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-for-smtp-configs"
PASSWORD = "s3cret-relay-pw-7f1c2b"


class Stack:
    def __init__(
        self, database_url: str, redis_url: str, keys: str | None = None, **settings: Any
    ) -> None:
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            secrets_encryption_keys=SecretStr(keys or SecretKeyring.generate_setting()),
            **{"smtp_relay_allow_internal_hosts": True, **settings},
        )
        self.queue = RecordingQueue()
        self.services: Services = bootstrap(self.settings, queue=self.queue)
        provider = lambda: self.services  # noqa: E731 - the routes take a provider
        self.api = create_api(
            [send_routes(provider), smtp_config_routes(provider), queue_routes(provider)],
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
    assert relays.reseal_all(after.services.uow(), keyring, actor=SYSTEM_ACTOR) == 0
    # AND the relay's test still authenticates with it
    _, result = after.call("POST", f"/v1/smtp-configs/{config_id}/test", client)
    assert result["ok"] is True, result


# --- sending through a client's relay (item 2) -------------------------------

PROPS = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())


def send(stack: Stack, client: dict[str, Any], **fields: Any) -> tuple[int, dict[str, Any]]:
    body = {
        "template": "welcome",
        "from": "hello@example.com",
        "to": ["ada@example.org"],
        "props": PROPS,
        **fields,
    }
    return stack.call("POST", "/v1/send", client, body)


def deliver(stack: Stack, message_id: str) -> Any:
    from mailroom.services import delivery

    return delivery.deliver_message(
        stack.services.uow(),
        stack.services.templates,
        stack.services.renderer,
        stack.services.providers,
        message_id=uuid.UUID(message_id),
        max_attempts=5,
    )


@pytest.fixture
def relay_stack(
    database: Database, database_url: str, redis_url: str, smtp_sink: SmtpSink
) -> Stack:
    # The service's own provider chain is the conftest sink.
    return Stack(
        database_url,
        redis_url,
        smtp_host=smtp_sink.host,
        smtp_port=smtp_sink.port,
        breaker_failure_threshold=2,
        breaker_cooldown_seconds=300,
        smtp_config_cache_seconds=0,
    )


def test_a_send_naming_an_unknown_or_another_clients_relay_is_422(
    relay_stack: Stack, relay: SwitchableSmtp
) -> None:
    stack = relay_stack
    owner, other = stack.client(), stack.client()
    config_id = stack.call("POST", "/v1/smtp-configs", owner, relay_body(relay))[1]["id"]
    for client, ref in ((owner, "no-such-relay"), (other, config_id), (other, "transactional")):
        status, answer = send(stack, client, smtp_config=ref)
        assert status == 422, answer
        assert answer["error"]["code"] == "unknown_smtp_config"
    # AND an inactive one is refused too, while the owner may name it by id or name when active
    assert send(stack, owner, smtp_config="transactional")[0] == 202
    assert send(stack, owner, smtp_config=config_id)[0] == 202
    stack.call("PATCH", f"/v1/smtp-configs/{config_id}", owner, {"active": False})
    assert send(stack, owner, smtp_config="transactional")[0] == 422


def test_mail_goes_through_the_relay_the_send_names_or_the_clients_default(
    relay_stack: Stack, relay: SwitchableSmtp, smtp_sink: SmtpSink
) -> None:
    stack = relay_stack
    client = stack.client()
    stack.call("POST", "/v1/smtp-configs", client, relay_body(relay))
    # GIVEN a message naming the relay, and one from a client without any default
    _, named = send(stack, client, smtp_config="transactional")
    _, plain = send(stack, client)
    # WHEN both are delivered
    assert deliver(stack, named["id"]).result.value == "sent"
    assert deliver(stack, plain["id"]).result.value == "sent"
    # THEN the named one went through the client's relay (authenticated), the other the chain
    assert len(relay.received) == 1
    assert len(smtp_sink.received) == 1
    # WHEN the relay becomes the client's default
    config_id = stack.call("GET", "/v1/smtp-configs", client)[1]["smtp_configs"][0]["id"]
    stack.call("PATCH", f"/v1/smtp-configs/{config_id}", client, {"default": True})
    _, later = send(stack, client)
    assert deliver(stack, later["id"]).result.value == "sent"
    # THEN a send naming nothing goes through it too, recorded as that relay
    assert len(relay.received) == 2
    with stack.services.uow() as uow:
        stored = uow.messages.get(uuid.UUID(later["id"]))
    assert stored is not None
    assert stored.provider == f"smtp-config:{config_id}"


def test_one_clients_dead_relay_opens_only_its_own_breaker(
    relay_stack: Stack, smtp_sink: SmtpSink
) -> None:
    stack = relay_stack
    breakers = stack.services.providers._breakers
    # GIVEN client A whose relay is down (421 at MAIL) and client B whose relay is fine
    dead = SwitchableSmtp(credentials=("relay-user", PASSWORD)).start()
    fine = SwitchableSmtp(credentials=("relay-user", PASSWORD)).start()
    try:
        dead.mode = "down"
        a, b = stack.client(), stack.client()
        a_id = stack.call("POST", "/v1/smtp-configs", a, relay_body(dead, default=True))[1]["id"]
        b_id = stack.call("POST", "/v1/smtp-configs", b, relay_body(fine, default=True))[1]["id"]
        # WHEN A sends three messages and B three, interleaved
        outcomes = []
        for _ in range(3):
            outcomes.append(("a", deliver(stack, send(stack, a)[1]["id"])))
            outcomes.append(("b", deliver(stack, send(stack, b)[1]["id"])))
        # THEN A's breaker opened, after two failures (the third skipped the relay)
        assert breakers.state(f"smtp-config:{a_id}") == "open"
        assert dead.mail_commands == 2
        # AND A's mail failed over to the provider chain and was sent
        assert all(o.result.value == "sent" for who, o in outcomes if who == "a")
        assert len(smtp_sink.received) == 3
        # AND B's relay carried all of B's mail, its breaker and the shared one closed
        assert len(fine.received) == 3
        assert breakers.state(f"smtp-config:{b_id}") == "closed"
        assert breakers.state("smtp") == "closed"
    finally:
        dead.stop()
        fine.stop()


def test_relays_on_internal_addresses_are_refused_unless_allowed(
    database: Database,
    database_url: str,
    redis_url: str,
    relay: SwitchableSmtp,
    smtp_sink: SmtpSink,
) -> None:
    # GIVEN the default: relays must be on the public internet
    stack = Stack(
        database_url,
        redis_url,
        smtp_relay_allow_internal_hosts=False,
        smtp_host=smtp_sink.host,
        smtp_port=smtp_sink.port,
        smtp_config_cache_seconds=0,
    )
    client = stack.client()
    body = relay_body(relay, default=True)
    config_id = stack.call("POST", "/v1/smtp-configs", client, body)[1]["id"]
    # WHEN a client's relay on 127.0.0.1 is tested
    _, result = stack.call("POST", f"/v1/smtp-configs/{config_id}/test", client)
    # THEN the test stops before connecting, saying why
    assert result["failed_step"] == "connect"
    assert "internal address" in result["steps"][0]["detail"]
    assert relay.mail_commands == 0
    # AND mail for it goes through the provider chain instead
    _, accepted = send(stack, client)
    assert deliver(stack, accepted["id"]).result.value == "sent"
    assert len(relay.received) == 0
    assert len(smtp_sink.received) == 1


def test_a_queues_relay_carries_its_mail_unless_the_send_names_one(
    relay_stack: Stack, relay: SwitchableSmtp, smtp_sink: SmtpSink
) -> None:
    stack = relay_stack
    client, other = stack.client(), stack.client()
    second = SwitchableSmtp(credentials=("relay-user", PASSWORD)).start()
    try:
        # GIVEN two relays of the client's, the first one a queue's
        queue_relay = stack.call("POST", "/v1/smtp-configs", client, relay_body(relay))[1]["id"]
        send_relay = stack.call(
            "POST", "/v1/smtp-configs", client, relay_body(second, name="campaigns")
        )[1]["id"]
        status, queue = stack.call(
            "POST",
            "/v1/queues",
            client,
            {"name": "relayed", "smtp_config_id": queue_relay},
        )
        assert (status, queue["smtp_config_id"]) == (201, queue_relay)
        # WHEN one send goes to the queue, one to it naming the other relay,
        # and one to the default queue (the client has no default relay yet)
        _, through_queue = send(stack, client, queue="relayed")
        _, named = send(stack, client, queue="relayed", smtp_config="campaigns")
        _, plain = send(stack, client)
        for message in (through_queue, named, plain):
            assert deliver(stack, message["id"]).result.value == "sent"
        # THEN the send's relay wins, then the queue's, then the provider chain
        assert (len(relay.received), len(second.received), len(smtp_sink.received)) == (1, 1, 1)
        # WHEN the other relay becomes the client's default
        stack.call("PATCH", f"/v1/smtp-configs/{send_relay}", client, {"default": True})
        _, queued = send(stack, client, queue="relayed")
        _, defaulted = send(stack, client)
        for message in (queued, defaulted):
            assert deliver(stack, message["id"]).result.value == "sent"
        # THEN the queue's relay still beats the client's default, which takes the rest
        assert (len(relay.received), len(second.received)) == (2, 2)
        with stack.services.uow() as uow:
            stored = uow.messages.get(uuid.UUID(queued["id"]))
        assert stored is not None
        assert stored.provider == f"smtp-config:{queue_relay}"
        # AND a queue naming another client's relay is refused, nothing written
        status, refused = stack.call(
            "POST", "/v1/queues", other, {"name": "stolen", "smtp_config_id": queue_relay}
        )
        assert (status, refused["error"]["code"]) == (422, "unknown_smtp_config")
        assert stack.call("GET", "/v1/queues", other)[1]["queues"] == []
        status, refused = stack.call(
            "PATCH", f"/v1/queues/{queue['id']}", client, {"smtp_config_id": str(uuid.uuid4())}
        )
        assert (status, refused["error"]["code"]) == (422, "unknown_smtp_config")
    finally:
        second.stop()
