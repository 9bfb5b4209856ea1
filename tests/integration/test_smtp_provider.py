"""The SMTP provider against a real SMTP server on a loopback socket."""

from __future__ import annotations

import contextlib
import email
import smtplib
import socket
import threading
import uuid
from collections.abc import Iterator
from email import policy

import pytest

from mailroom.adapters.providers.base import FailureKind, ProviderError
from mailroom.adapters.providers.smtp import REPLACE_AFTER_IDLE_SECONDS, SmtpProvider
from mailroom.domain.mime import OutgoingEmail, build_mime
from mailroom.domain.model import Message, RenderedEmail
from tests.integration.conftest import SmtpSink, free_port, running_sink

pytestmark = pytest.mark.integration


@pytest.fixture(params=[True, False], ids=["pipelining", "one-command-at-a-time"])
def smtp_sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    # Every test here runs against a relay offering PIPELINING and one that does not.
    with running_sink(pipelining=request.param) as sink:
        yield sink


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


class CountedNoops:
    """Counts the NOOPs a provider sends, through smtplib's own method."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        noop = smtplib.SMTP.noop

        def counted(connection: smtplib.SMTP) -> tuple[int, bytes]:
            self.count += 1
            return noop(connection)

        monkeypatch.setattr(smtplib.SMTP, "noop", counted)


def _idled(provider: SmtpProvider, seconds: float) -> None:
    # As if the provider's last send were this long ago.
    provider._last_used -= seconds


def test_a_connection_is_kept_across_batches_and_checked_after_idling(
    smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a provider that sent one batch, then one more at once
    noops = CountedNoops(monkeypatch)
    with SmtpProvider(smtp_sink.host, smtp_sink.port) as provider:
        provider.send(_email("a@example.com"))
        provider.send(_email("b@example.com"))
        assert noops.count == 0  # back to back: no round trip spent checking
        # WHEN the next batch comes after a few idle seconds
        _idled(provider, 5)
        provider.send(_email("c@example.com"))
    # THEN the connection was checked with a NOOP and used again
    assert noops.count == 1
    assert len({mail.session_id for mail in smtp_sink.received}) == 1


def test_a_connection_idle_past_the_bound_is_replaced_without_a_noop(
    smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a connection idle for longer than a frozen container may keep a
    # socket worth asking (a NOOP on a dead one would wait out the timeout)
    noops = CountedNoops(monkeypatch)
    with SmtpProvider(smtp_sink.host, smtp_sink.port) as provider:
        provider.send(_email("a@example.com"))
        _idled(provider, REPLACE_AFTER_IDLE_SECONDS + 1)
        # WHEN the next message goes out
        provider.send(_email("b@example.com"))
    # THEN it went over a new connection, and nothing was asked of the old one
    assert noops.count == 0
    assert len({mail.session_id for mail in smtp_sink.received}) == 2


def test_a_connection_the_relay_closed_while_idle_is_replaced(smtp_sink: SmtpSink) -> None:
    # GIVEN a kept connection whose socket the relay side has since closed
    with SmtpProvider(smtp_sink.host, smtp_sink.port) as provider:
        provider.send(_email("a@example.com"))
        connection = provider._connection
        assert connection is not None
        assert connection.sock is not None
        connection.sock.shutdown(socket.SHUT_RDWR)
        _idled(provider, 5)
        # WHEN the next batch sends, THEN the failed NOOP opens a new session
        provider.send(_email("b@example.com"))
    assert [mail.recipients for mail in smtp_sink.received] == [
        ["a@example.com"],
        ["b@example.com"],
    ]
    assert len({mail.session_id for mail in smtp_sink.received}) == 2


@pytest.mark.parametrize(
    ("recipient", "kind"),
    [
        ("reject-me@example.com", FailureKind.PERMANENT),
        # 4xx at RCPT (greylisting, a full mailbox) is about this message:
        # retried later, never counted against the relay's breaker (issue 14).
        ("defer-me@example.com", FailureKind.DEFERRED),
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


def test_some_recipients_refused_still_sends_to_the_others(smtp_sink: SmtpSink) -> None:
    with SmtpProvider(smtp_sink.host, smtp_sink.port) as provider:
        provider.send(_email("reject-me@example.com", "ok@example.com"))
        provider.send(_email("next@example.com"))
    assert [mail.recipients for mail in smtp_sink.received] == [
        ["ok@example.com"],
        ["next@example.com"],
    ]


def test_body_lines_starting_with_a_dot_arrive_intact(smtp_sink: SmtpSink) -> None:
    mime = b"Subject: dots\r\n\r\n.one leading dot\r\n..two\r\n.\r\nend"
    outgoing = OutgoingEmail("<dots@example.com>", "from@example.com", ["to@example.com"], mime)
    with SmtpProvider(smtp_sink.host, smtp_sink.port) as provider:
        provider.send(outgoing)
    (mail,) = smtp_sink.received
    # The server adds the final line end that the body lacked.
    assert mail.data == mime + b"\r\n"


def test_a_refused_sender_is_classified_by_its_code() -> None:
    script = {b"MAIL": b"451 4.7.1 slow down\r\n"}
    with (
        _scripted_relay(script) as port,
        SmtpProvider("127.0.0.1", port) as provider,
        pytest.raises(ProviderError) as caught,
    ):
        provider.send(_email("a@example.com"))
    assert caught.value.kind is FailureKind.TRANSIENT
    assert "sender refused: 451" in caught.value.message


@pytest.mark.parametrize(
    ("verb", "reply", "kind"),
    [
        # MAIL: the relay's own trouble, our sender, or the SIZE we declared.
        (b"MAIL", b"452 4.3.1 insufficient system storage\r\n", FailureKind.TRANSIENT),
        (b"MAIL", b"550 5.7.1 sender not allowed\r\n", FailureKind.CONFIG),
        (b"MAIL", b"552 5.3.4 message size exceeds fixed limit\r\n", FailureKind.PERMANENT),
        # RCPT: the message's recipients, except a relay closing the channel.
        (b"RCPT", b"550 5.1.1 no such user\r\n", FailureKind.PERMANENT),
        (b"RCPT", b"450 4.2.0 greylisted, come back later\r\n", FailureKind.DEFERRED),
        (b"RCPT", b"452 4.2.2 mailbox full\r\n", FailureKind.DEFERRED),
        (b"RCPT", b"421 4.3.2 shutting down\r\n", FailureKind.TRANSIENT),
        # After the body: this message's content, except 421.
        (b".", b"552 5.3.4 message too large\r\n", FailureKind.PERMANENT),
        (b".", b"554 5.7.1 rejected as spam\r\n", FailureKind.PERMANENT),
        (b".", b"451 4.7.1 content filter says later\r\n", FailureKind.DEFERRED),
        (b".", b"421 4.3.2 shutting down\r\n", FailureKind.TRANSIENT),
    ],
)
def test_each_refusal_is_classified_by_whose_problem_it_is(
    verb: bytes, reply: bytes, kind: FailureKind
) -> None:
    # GIVEN a relay that answers one step of the transaction with ``reply``
    with (
        _scripted_relay({verb: reply}) as port,
        SmtpProvider("127.0.0.1", port, timeout_seconds=2) as provider,
        pytest.raises(ProviderError) as caught,
    ):
        # WHEN a message is sent
        provider.send(_email("a@example.com"))
    # THEN the failure's kind says whose problem it is: only TRANSIENT counts
    # against the breaker that every client shares
    assert caught.value.kind is kind
    assert reply[:3].decode() in caught.value.message


def test_commands_are_pipelined_when_the_relay_offers_it() -> None:
    # This relay answers nothing until it holds MAIL, RCPT and DATA: a client
    # waiting for each reply in turn would time out here.
    with (
        _scripted_relay({}, hold_until_data=True) as port,
        SmtpProvider("127.0.0.1", port, timeout_seconds=2) as provider,
    ):
        receipt = provider.send(_email("a@example.com", "b@example.com"))
    assert receipt.provider == "smtp"


@contextlib.contextmanager
def _scripted_relay(replies: dict[bytes, bytes], *, hold_until_data: bool = False) -> Iterator[int]:
    """A one-connection relay offering PIPELINING: canned replies, overridden per verb."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    defaults = {
        b"EHLO": b"250-relay\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n",
        b"DATA": b"354 go ahead\r\n",
        b"QUIT": b"221 bye\r\n",
    }

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.sendall(b"220 relay\r\n")
            buffer, held, in_body = b"", b"", False
            while chunk := connection.recv(65536):
                buffer += chunk
                while True:
                    if in_body:
                        end = buffer.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        buffer, in_body = buffer[end + 5 :], False
                        connection.sendall(replies.get(b".", b"250 queued\r\n"))
                        continue
                    line, found, rest = buffer.partition(b"\r\n")
                    if not found:
                        break
                    buffer = rest
                    verb = line[:4].upper()
                    reply = replies.get(verb) or defaults.get(verb, b"250 ok\r\n")
                    if hold_until_data and verb in (b"MAIL", b"RCPT"):
                        held += reply
                        continue
                    connection.sendall(held + reply)
                    held = b""
                    if verb == b"DATA" and reply.startswith(b"354"):
                        in_body, buffer = True, b"\r\n" + buffer
                    if verb == b"QUIT":
                        return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=5)
