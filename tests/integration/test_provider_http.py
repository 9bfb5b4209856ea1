"""SendGrid and Mailgun against local HTTP servers that speak their APIs.

The doubles, and the API references their formats were checked against, are
in tests/integration/provider_doubles.py (module docstring): SendGrid v3 Mail
Send (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send)
and Mailgun's messages.mime
(https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages/post-v3--domain-name--messages-mime).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from mailroom.adapters.providers.base import FailureKind, ProviderError
from mailroom.adapters.providers.mailgun import MailgunProvider
from mailroom.adapters.providers.sendgrid import SendGridProvider
from mailroom.domain.mime import OutgoingEmail, build_mime
from mailroom.domain.model import Message, RenderedEmail
from tests.integration.conftest import free_port
from tests.integration.provider_doubles import (
    MailgunDouble,
    SendGridDouble,
    SilentServer,
    running,
)

pytestmark = pytest.mark.integration

SENDER = "Acme Support <noreply@acme.example.com>"


def _email(
    *, sender: str = SENDER, cc: list[str] | None = None, bcc: list[str] | None = None
) -> OutgoingEmail:
    message = Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name="welcome",
        from_address=sender,
        to=["Ada Lovelace <ada@example.com>"],
        cc=cc or [],
        bcc=bcc or [],
        reply_to=["help@acme.example.com"],
    )
    return build_mime(
        message, RenderedEmail(subject="Welcome, Ada", html="<p>Hi Ada</p>", text="Hi Ada\n")
    )


@pytest.fixture
def sendgrid() -> Iterator[SendGridDouble]:
    double = SendGridDouble()
    yield from running(double)  # type: ignore[misc]


@pytest.fixture
def mailgun() -> Iterator[MailgunDouble]:
    double = MailgunDouble()
    yield from running(double)  # type: ignore[misc]


def _sendgrid(double: SendGridDouble, *, key: str | None = None) -> SendGridProvider:
    return SendGridProvider(
        double.api_key if key is None else key, base_url=double.base_url, timeout_seconds=0.5
    )


def _mailgun(
    double: MailgunDouble, *, key: str | None = None, domain: str | None = None
) -> MailgunProvider:
    return MailgunProvider(
        double.api_key if key is None else key,
        double.domain if domain is None else domain,
        base_url=double.base_url,
        timeout_seconds=0.5,
    )


class TestSendGrid:
    def test_a_send_carries_the_mime_messages_parts_and_returns_the_x_message_id(
        self, sendgrid: SendGridDouble
    ) -> None:
        # GIVEN a message with a display name, cc, bcc and reply-to
        email = _email(cc=["Bob <bob@example.com>"], bcc=["audit@acme.example.com"])
        # WHEN it goes through SendGrid
        receipt = _sendgrid(sendgrid).send(email)
        # THEN SendGrid got one personalization with every recipient in its place
        (request,) = sendgrid.requests
        mail = request.parsed
        assert mail["personalizations"] == [
            {
                "to": [{"email": "ada@example.com", "name": "Ada Lovelace"}],
                "cc": [{"email": "bob@example.com", "name": "Bob"}],
                "bcc": [{"email": "audit@acme.example.com"}],
            }
        ]
        assert mail["from"] == {"email": "noreply@acme.example.com", "name": "Acme Support"}
        assert mail["subject"] == "Welcome, Ada"
        assert mail["reply_to_list"] == [{"email": "help@acme.example.com"}]
        # AND the same bodies and Message-ID as the MIME every provider sends
        assert [(c["type"], c["value"].strip()) for c in mail["content"]] == [
            ("text/plain", "Hi Ada"),
            ("text/html", "<p>Hi Ada</p>"),
        ]
        assert mail["headers"] == {"Message-ID": email.message_id}
        assert mail["custom_args"] == {"mailroom_message_id": email.message_id.strip("<>")}
        # AND the receipt holds SendGrid's id from the X-Message-Id header
        assert receipt.provider == "sendgrid"
        assert receipt.provider_msg_id not in ("", email.message_id.strip("<>"))

    @pytest.mark.parametrize(
        ("setup", "kind", "text"),
        [
            ("bad_key", FailureKind.CONFIG, "HTTP 401: The provided authorization grant"),
            ("unverified_sender", FailureKind.CONFIG, "HTTP 403: from: The from address"),
            ("throttle", FailureKind.TRANSIENT, "HTTP 429"),
            ("down", FailureKind.TRANSIENT, "HTTP 503"),
            ("invalid_recipient", FailureKind.PERMANENT, "HTTP 400: personalizations.0.to"),
            ("no_key", FailureKind.CONFIG, "SENDGRID_API_KEY is not set"),
        ],
    )
    def test_answers_map_onto_failure_kinds(
        self, sendgrid: SendGridDouble, setup: str, kind: FailureKind, text: str
    ) -> None:
        provider = _sendgrid(sendgrid)
        email = _email()
        if setup == "bad_key":
            provider = _sendgrid(sendgrid, key="SG.wrong")
        elif setup == "no_key":
            provider = SendGridProvider(None, base_url=sendgrid.base_url)
        elif setup == "unverified_sender":
            email = _email(sender="someone@elsewhere.example.com")
        elif setup == "invalid_recipient":
            email = email.__class__(
                email.message_id,
                email.envelope_from,
                email.envelope_recipients,
                email.mime.replace(b"To: Ada Lovelace <ada@example.com>", b"To: nobody"),
            )
        elif setup in ("throttle", "down"):
            sendgrid.mode = setup
        with pytest.raises(ProviderError) as caught:
            provider.send(email)
        assert (caught.value.provider, caught.value.kind) == ("sendgrid", kind)
        assert caught.value.message.startswith(text), caught.value.message

    def test_a_server_that_never_answers_is_a_transient_timeout(self) -> None:
        silent = SilentServer()
        try:
            provider = SendGridProvider(
                "SG.k", base_url=f"http://127.0.0.1:{silent.port}", timeout_seconds=0.3
            )
            with pytest.raises(ProviderError) as caught:
                provider.send(_email())
        finally:
            silent.stop()
        assert caught.value.kind is FailureKind.TRANSIENT
        assert "timed out" in caught.value.message.lower()

    def test_nothing_listening_is_transient(self) -> None:
        provider = SendGridProvider("SG.k", base_url=f"http://127.0.0.1:{free_port()}")
        with pytest.raises(ProviderError) as caught:
            provider.send(_email())
        assert caught.value.kind is FailureKind.TRANSIENT


class TestMailgun:
    def test_a_send_posts_the_exact_mime_and_every_envelope_recipient(
        self, mailgun: MailgunDouble
    ) -> None:
        email = _email(cc=["bob@example.com"], bcc=["audit@acme.example.com"])
        receipt = _mailgun(mailgun).send(email)
        (request,) = mailgun.requests
        assert request.path == "/v3/mg.acme.example.com/messages.mime"
        fields = request.parsed
        # The bytes Mailgun sends are the bytes SMTP and SES send
        assert fields["message"] == [email.mime]
        assert fields["to"] == ["ada@example.com", "bob@example.com", "audit@acme.example.com"]
        # Mailgun answers with the Message-ID it sends under: ours
        assert receipt.provider == "mailgun"
        assert f"<{receipt.provider_msg_id}>" == email.message_id

    @pytest.mark.parametrize(
        ("setup", "kind", "text"),
        [
            ("bad_key", FailureKind.CONFIG, "HTTP 401: Forbidden"),
            ("unknown_domain", FailureKind.CONFIG, "HTTP 404: Domain not found"),
            ("throttle", FailureKind.TRANSIENT, "HTTP 429"),
            ("down", FailureKind.TRANSIENT, "HTTP 500"),
            ("no_recipients", FailureKind.PERMANENT, "HTTP 400: 'to' parameter is missing"),
            ("no_domain", FailureKind.CONFIG, "MAILGUN_API_KEY and MAILGUN_DOMAIN"),
        ],
    )
    def test_answers_map_onto_failure_kinds(
        self, mailgun: MailgunDouble, setup: str, kind: FailureKind, text: str
    ) -> None:
        provider = _mailgun(mailgun)
        email = _email()
        if setup == "bad_key":
            provider = _mailgun(mailgun, key="key-wrong")
        elif setup == "unknown_domain":
            provider = _mailgun(mailgun, domain="mg.other.example.com")
        elif setup == "no_domain":
            provider = _mailgun(mailgun, domain="")
        elif setup == "no_recipients":
            email = email.__class__(email.message_id, email.envelope_from, [], email.mime)
        else:
            mailgun.mode = setup
        with pytest.raises(ProviderError) as caught:
            provider.send(email)
        assert (caught.value.provider, caught.value.kind) == ("mailgun", kind)
        assert caught.value.message.startswith(text), caught.value.message

    def test_a_server_that_never_answers_is_a_transient_timeout(
        self, mailgun: MailgunDouble
    ) -> None:
        mailgun.mode = "hang"
        with pytest.raises(ProviderError) as caught:
            _mailgun(mailgun).send(_email())
        assert caught.value.kind is FailureKind.TRANSIENT
        assert "timed out" in caught.value.message.lower()

    def test_connections_are_reused_across_sends(self, mailgun: MailgunDouble) -> None:
        provider = _mailgun(mailgun)
        for _ in range(3):
            provider.send(_email())
        # urllib3's pool kept one connection open: every request came from one port
        assert len(mailgun.requests) == 3
        assert len({request.client_port for request in mailgun.requests}) == 1
