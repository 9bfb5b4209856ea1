"""What each HTTPS provider gets for international addresses (issue 14).

SES (moto) and SendGrid (its local double) do not take SMTPUTF8: IDN domains
go as punycode, display names decoded or encoded once, and a non-ASCII local
part is refused as the message's permanent problem before any request.
Mailgun's HTTP API takes SMTPUTF8: it gets the RFC 6532 form.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from mailroom.adapters.providers.base import FailureKind, ProviderError
from mailroom.adapters.providers.mailgun import MailgunProvider
from mailroom.adapters.providers.sendgrid import SendGridProvider
from mailroom.adapters.providers.ses import SesProvider
from mailroom.domain.mime import OutgoingEmail, build_mime
from mailroom.domain.model import Message, RenderedEmail
from tests.integration.provider_doubles import MailgunDouble, SendGridDouble, running
from tests.integration.test_provider_ses import VERIFIED, _sent_by_moto

pytestmark = pytest.mark.integration


def _email(to: str) -> OutgoingEmail:
    message = Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name="welcome",
        from_address=f"Acme <{VERIFIED}>",
        to=[to],
    )
    return build_mime(message, RenderedEmail(subject="Grüße", html="<p>x</p>", text="x\n"))


@pytest.fixture
def sendgrid() -> Iterator[SendGridDouble]:
    yield from running(SendGridDouble())  # type: ignore[misc]


@pytest.fixture
def mailgun() -> Iterator[MailgunDouble]:
    yield from running(MailgunDouble())  # type: ignore[misc]


@pytest.fixture
def verified_sender(aws: str) -> str:
    boto3.client("sesv2", region_name="us-east-1").create_email_identity(EmailIdentity=VERIFIED)
    return aws


def test_ses_gets_punycode_domains_and_an_encoded_name(verified_sender: str) -> None:
    email = _email("Zoë <zoe@bücher.example>")
    receipt = SesProvider("us-east-1").send(email)
    sent = _sent_by_moto(verified_sender, receipt.provider_msg_id)
    assert "zoe@xn--bcher-kva.example" in sent["destinations"]
    assert sent["raw_data"].encode() == email.mime
    assert email.mime.isascii()


def test_ses_refuses_a_utf8_local_part_as_permanent_without_a_request(aws: str) -> None:
    # No identity is verified here: a request would fail as CONFIG, not PERMANENT
    with pytest.raises(ProviderError) as caught:
        SesProvider("us-east-1").send(_email("zoë@bücher.example"))
    assert caught.value.kind is FailureKind.PERMANENT
    assert "SMTPUTF8" in caught.value.message


def test_sendgrid_gets_punycode_and_the_decoded_name(sendgrid: SendGridDouble) -> None:
    SendGridProvider(sendgrid.api_key, base_url=sendgrid.base_url).send(
        _email("Zoë <zoe@bücher.example>")
    )
    (request,) = sendgrid.requests
    assert request.parsed["personalizations"][0]["to"] == [
        {"email": "zoe@xn--bcher-kva.example", "name": "Zoë"}
    ]
    assert request.parsed["subject"] == "Grüße"


def test_sendgrid_refuses_a_utf8_local_part_as_permanent(sendgrid: SendGridDouble) -> None:
    provider = SendGridProvider(sendgrid.api_key, base_url=sendgrid.base_url)
    with pytest.raises(ProviderError) as caught:
        provider.send(_email("zoë@bücher.example"))
    assert caught.value.kind is FailureKind.PERMANENT
    assert sendgrid.requests == []


def test_mailgun_gets_the_utf8_form_for_a_utf8_local_part(mailgun: MailgunDouble) -> None:
    email = _email("Zoë <zoë@bücher.example>")
    MailgunProvider(mailgun.api_key, mailgun.domain, base_url=mailgun.base_url).send(email)
    (request,) = mailgun.requests
    assert request.parsed["to"] == ["zoë@xn--bcher-kva.example"]
    assert request.parsed["message"] == [email.mime_utf8]
    assert "To: Zoë <zoë@bücher.example>\r\n".encode() in request.parsed["message"][0]
