"""The SMTP provider's error mapping against SMTP servers that refuse, time out, or say 4xx/5xx.

Recipient-level 550/451 are in test_smtp_provider.py; these are the server-
and account-level answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from mailroom.adapters.providers.base import FailureKind, ProviderError
from mailroom.adapters.providers.smtp import SmtpProvider
from mailroom.domain.mime import OutgoingEmail, build_mime
from mailroom.domain.model import Message, RenderedEmail
from tests.integration.provider_doubles import SilentServer, SwitchableSmtp

pytestmark = [
    pytest.mark.integration,
    # AUTH without TLS is what these loopback doubles do on purpose.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]


def _email() -> OutgoingEmail:
    message = Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name="welcome",
        from_address="noreply@acme.example.com",
        to=["ada@example.com"],
    )
    return build_mime(message, RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi\n"))


@pytest.fixture
def relay() -> Iterator[SwitchableSmtp]:
    server = SwitchableSmtp().start()
    yield server
    server.stop()


@pytest.fixture
def auth_relay() -> Iterator[SwitchableSmtp]:
    server = SwitchableSmtp(credentials=("mailroom", "s3cret")).start()
    yield server
    server.stop()


def _send(server: SwitchableSmtp, **options: object) -> None:
    with SmtpProvider(server.host, server.port, timeout_seconds=2, **options) as provider:  # type: ignore[arg-type]
        provider.send(_email())


def test_a_relay_that_is_down_421_is_transient(relay: SwitchableSmtp) -> None:
    relay.mode = "down"
    with pytest.raises(ProviderError) as caught:
        _send(relay)
    assert caught.value.kind is FailureKind.TRANSIENT
    assert "421" in caught.value.message
    assert relay.mail_commands == 1


def test_wrong_credentials_are_a_config_error(auth_relay: SwitchableSmtp) -> None:
    with pytest.raises(ProviderError) as caught:
        _send(auth_relay, username="mailroom", password="wrong")
    assert caught.value.kind is FailureKind.CONFIG
    assert caught.value.message.startswith("authentication failed")
    assert auth_relay.received == []


def test_the_right_credentials_send(auth_relay: SwitchableSmtp) -> None:
    _send(auth_relay, username="mailroom", password="s3cret")
    assert len(auth_relay.received) == 1


def test_a_relay_requiring_auth_we_do_not_send_is_not_the_messages_fault(
    auth_relay: SwitchableSmtp,
) -> None:
    # 530 "authentication required" at MAIL FROM: the sender was refused
    with pytest.raises(ProviderError) as caught:
        _send(auth_relay)
    assert caught.value.kind is FailureKind.CONFIG


def test_auth_configured_but_not_offered_is_a_config_error(relay: SwitchableSmtp) -> None:
    with pytest.raises(ProviderError) as caught:
        _send(relay, username="mailroom", password="s3cret")
    assert caught.value.kind is FailureKind.CONFIG
    assert "not supported" in caught.value.message


def test_starttls_configured_but_not_offered_is_a_config_error(relay: SwitchableSmtp) -> None:
    with pytest.raises(ProviderError) as caught:
        _send(relay, security="starttls")
    assert caught.value.kind is FailureKind.CONFIG


def test_a_server_that_never_greets_times_out_as_transient() -> None:
    silent = SilentServer()
    try:
        with (
            pytest.raises(ProviderError) as caught,
            SmtpProvider("127.0.0.1", silent.port, timeout_seconds=0.3) as provider,
        ):
            provider.send(_email())
    finally:
        silent.stop()
    assert caught.value.kind is FailureKind.TRANSIENT
    assert "timed out" in caught.value.message


def test_without_reuse_every_message_gets_its_own_connection(relay: SwitchableSmtp) -> None:
    with SmtpProvider(relay.host, relay.port, reuse_connection=False) as provider:
        for _ in range(3):
            provider.send(_email())
    assert len({mail.session_id for mail in relay.received}) == 3
