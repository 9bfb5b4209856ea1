"""The SMTP provider against a real SMTP server on a loopback socket."""

from __future__ import annotations

import email
import uuid
from email import policy

import pytest

from mailroom.adapters.providers.base import FailureKind, ProviderError
from mailroom.adapters.providers.smtp import SmtpProvider
from mailroom.domain.mime import OutgoingEmail, build_mime
from mailroom.domain.model import Message, RenderedEmail
from tests.integration.conftest import SmtpSink, free_port

pytestmark = pytest.mark.integration


def _email(*to: str) -> OutgoingEmail:
    message = Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name="welcome",
        from_address="Acme <noreply@acme.example.com>",
        to=list(to),
    )
    return build_mime(message, RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi\n"))


def test_a_batch_shares_one_connection_and_ids_are_message_ids(smtp_sink: SmtpSink) -> None:
    # GIVEN three messages sent within one provider session
    emails = [_email(f"user{i}@example.com") for i in range(3)]
    with SmtpProvider(smtp_sink.host, smtp_sink.port) as provider:
        receipts = [provider.send(outgoing) for outgoing in emails]
    # THEN the server saw all three over a single SMTP session
    assert len(smtp_sink.received) == 3
    assert len({mail.session_id for mail in smtp_sink.received}) == 1
    # AND each receipt carries the Message-ID the recipient sees
    for receipt, outgoing, mail in zip(receipts, emails, smtp_sink.received, strict=True):
        parsed = email.message_from_bytes(mail.data, policy=policy.default)
        assert receipt.provider == "smtp"
        assert f"<{receipt.provider_msg_id}>" == outgoing.message_id == parsed["Message-ID"]
        assert mail.recipients == outgoing.envelope_recipients


def test_a_new_batch_opens_a_new_connection(smtp_sink: SmtpSink) -> None:
    for _ in range(2):
        with SmtpProvider(smtp_sink.host, smtp_sink.port) as provider:
            provider.send(_email("a@example.com"))
    assert len({mail.session_id for mail in smtp_sink.received}) == 2


@pytest.mark.parametrize(
    ("recipient", "kind"),
    [
        ("reject-me@example.com", FailureKind.PERMANENT),
        ("defer-me@example.com", FailureKind.TRANSIENT),
    ],
)
def test_refused_recipients_are_classified(
    smtp_sink: SmtpSink, recipient: str, kind: FailureKind
) -> None:
    with pytest.raises(ProviderError) as caught, SmtpProvider(smtp_sink.host, smtp_sink.port) as p:
        p.send(_email(recipient))
    assert caught.value.kind is kind
    assert recipient in caught.value.message
    assert smtp_sink.received == []


def test_the_connection_recovers_after_a_refusal(smtp_sink: SmtpSink) -> None:
    with SmtpProvider(smtp_sink.host, smtp_sink.port) as provider:
        with pytest.raises(ProviderError):
            provider.send(_email("reject-me@example.com"))
        provider.send(_email("ok@example.com"))
    assert [mail.recipients for mail in smtp_sink.received] == [["ok@example.com"]]


def test_nothing_listening_is_transient() -> None:
    with (
        pytest.raises(ProviderError) as caught,
        SmtpProvider("127.0.0.1", free_port(), timeout_seconds=2) as provider,
    ):
        provider.send(_email("a@example.com"))
    assert caught.value.kind is FailureKind.TRANSIENT
