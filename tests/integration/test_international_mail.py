"""International mail (issue 14) against a real SMTP server, with SMTPUTF8 on and off.

Addresses go through the send command's validation, as the API stores them,
then through the MIME builder and the SMTP provider to an aiosmtpd server on
a socket. What arrives is parsed with ``email.policy.strict``, which raises
on any defect instead of guessing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from email.policy import strict

import pytest

from mailroom.adapters.providers.base import FailureKind, ProviderError
from mailroom.adapters.providers.smtp import SmtpProvider
from mailroom.domain.commands import SendRequest
from mailroom.domain.mime import build_mime
from mailroom.domain.model import Message, RenderedEmail
from tests.integration.conftest import SmtpSink, running_sink

pytestmark = pytest.mark.integration

RENDERED = RenderedEmail(subject="Grüße aus Köln", html="<p>Grüße</p>", text="Grüße\n")


@pytest.fixture(params=[True, False], ids=["pipelining", "one-command-at-a-time"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def utf8_relay(pipelining: bool) -> Iterator[SmtpSink]:
    with running_sink(pipelining=pipelining, smtputf8=True) as sink:
        yield sink


@pytest.fixture
def ascii_relay(pipelining: bool) -> Iterator[SmtpSink]:
    with running_sink(pipelining=pipelining, smtputf8=False) as sink:
        yield sink


def accepted(to: str, sender: str = "Acme <noreply@acme.example.com>") -> Message:
    """A message whose addresses are what the send API validated and stored."""
    request = SendRequest.model_validate({"template": "welcome", "to": to, "from": sender})
    assert request.from_ is not None
    return Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name="welcome",
        from_address=request.from_,
        to=list(request.to),
    )


def strictly_parsed(data: bytes) -> EmailMessage:
    parsed = BytesParser(policy=strict).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    assert parsed.defects == []
    return parsed


def utf8_text_parsed(data: bytes) -> EmailMessage:
    parsed = Parser(policy=strict).parsestr(data.decode("utf-8"))
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_an_idn_address_arrives_as_written_where_smtputf8_is_offered(
    utf8_relay: SmtpSink,
) -> None:
    # GIVEN a message to "Zoë <zoe@bücher.example>", stored as the API stores it
    message = accepted("Zoë <zoe@bücher.example>")
    # WHEN it is sent to a relay offering SMTPUTF8
    with SmtpProvider(utf8_relay.host, utf8_relay.port) as provider:
        provider.send(build_mime(message, RENDERED))
    # THEN the message was sent under SMTPUTF8, to the A-label domain
    (mail,) = utf8_relay.received
    assert "SMTPUTF8" in mail.mail_options
    assert mail.recipients == ["zoe@xn--bcher-kva.example"]
    # AND the headers read exactly as written (RFC 6532), name encoded nowhere
    parsed = strictly_parsed(mail.data)
    assert str(parsed["To"]) == "Zoë <zoe@bücher.example>"
    # (the bytes parser keeps 8-bit header bytes surrogate-escaped inside its
    # address objects; parsed as the UTF-8 text it is, the parts read right)
    (address,) = utf8_text_parsed(mail.data)["To"].addresses
    assert (address.display_name, address.addr_spec) == ("Zoë", "zoe@bücher.example")
    assert str(parsed["Subject"]) == "Grüße aus Köln"
    assert b"=?utf-8?" not in mail.data.split(b"\r\n\r\n")[0].split(b"Subject:")[0]
    body = parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == "Grüße\n"


def test_without_smtputf8_an_idn_domain_goes_as_punycode_and_the_name_reads_once(
    ascii_relay: SmtpSink,
) -> None:
    # GIVEN the same message, and a relay that does not offer SMTPUTF8
    message = accepted("Zoë <zoe@bücher.example>")
    with SmtpProvider(ascii_relay.host, ascii_relay.port) as provider:
        provider.send(build_mime(message, RENDERED))
    (mail,) = ascii_relay.received
    # THEN it went as plain ASCII mail: no SMTPUTF8, the domain as A-labels
    assert "SMTPUTF8" not in mail.mail_options
    assert mail.recipients == ["zoe@xn--bcher-kva.example"]
    assert mail.data.isascii()
    # AND the display name is encoded exactly once: it decodes to "Zoë"
    parsed = strictly_parsed(mail.data)
    (address,) = parsed["To"].addresses
    assert (address.display_name, address.addr_spec) == ("Zoë", "zoe@xn--bcher-kva.example")
    assert str(parsed["Subject"]) == "Grüße aus Köln"


def test_a_utf8_local_part_is_sent_under_smtputf8(utf8_relay: SmtpSink) -> None:
    # GIVEN a recipient whose local part is not ASCII, and a sender with an IDN domain
    message = accepted("Zoë <zoë@bücher.example>", sender="Bücher <news@bücher.example>")
    with SmtpProvider(utf8_relay.host, utf8_relay.port) as provider:
        provider.send(build_mime(message, RENDERED))
    (mail,) = utf8_relay.received
    # THEN the envelope carries the UTF-8 local part and the A-label domain
    assert mail.recipients == ["zoë@xn--bcher-kva.example"]
    assert mail.envelope_from == "news@xn--bcher-kva.example"
    # AND the headers read as written
    parsed = strictly_parsed(mail.data)
    assert str(parsed["To"]) == "Zoë <zoë@bücher.example>"
    assert str(parsed["From"]) == "Bücher <news@bücher.example>"


def test_a_utf8_local_part_is_refused_as_permanent_where_smtputf8_is_not_offered(
    ascii_relay: SmtpSink,
) -> None:
    # GIVEN a recipient whose local part is not ASCII, and a relay without SMTPUTF8
    message = accepted("zoë@bücher.example")
    with SmtpProvider(ascii_relay.host, ascii_relay.port) as provider:
        # WHEN it is sent
        with pytest.raises(ProviderError) as caught:
            provider.send(build_mime(message, RENDERED))
        # THEN it is refused as the message's permanent problem, with the reason
        assert caught.value.kind is FailureKind.PERMANENT
        assert "SMTPUTF8" in caught.value.message
        # AND the session is unharmed: the next message goes through it
        provider.send(build_mime(accepted("ada@example.com"), RENDERED))
    assert [mail.recipients for mail in ascii_relay.received] == [["ada@example.com"]]
