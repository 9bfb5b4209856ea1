"""The SES provider (SES v2 SendEmail, raw MIME) against moto's server."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

import boto3
import pytest

from mailroom.adapters.providers.base import FailureKind, ProviderError
from mailroom.adapters.providers.ses import SesProvider
from mailroom.domain.mime import OutgoingEmail, build_mime
from mailroom.domain.model import Message, RenderedEmail
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

VERIFIED = "noreply@acme.example.com"


def _email(sender: str = f"Acme <{VERIFIED}>") -> OutgoingEmail:
    message = Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name="welcome",
        from_address=sender,
        to=["ada@example.com"],
        bcc=["audit@acme.example.com"],
    )
    return build_mime(message, RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi\n"))


def _sent_by_moto(endpoint: str, message_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as answer:
        data = json.loads(answer.read())
    (sent,) = [m for m in data["ses"]["RawMessage"] if m["id"] == message_id]
    return dict(sent)


@pytest.fixture
def verified_sender(aws: str) -> str:
    boto3.client("sesv2", region_name="us-east-1").create_email_identity(EmailIdentity=VERIFIED)
    return aws


def test_raw_mime_goes_out_unchanged_with_bcc_in_the_envelope_only(verified_sender: str) -> None:
    # GIVEN a verified sender and a message with a Bcc recipient
    email = _email()
    # WHEN SES sends it
    receipt = SesProvider("us-east-1").send(email)
    # THEN SES received our exact MIME, Bcc among the envelope recipients only
    sent = _sent_by_moto(verified_sender, receipt.provider_msg_id)
    assert sent["raw_data"].encode() == email.mime
    assert b"audit@acme.example.com" not in email.mime
    assert {"ada@example.com", "audit@acme.example.com"} <= set(sent["destinations"])
    assert (receipt.provider, sent["source"]) == ("ses", VERIFIED)


def test_an_unverified_sender_is_a_config_error(verified_sender: str) -> None:
    with pytest.raises(ProviderError) as caught:
        SesProvider("us-east-1").send(_email("Other <someone@elsewhere.example.com>"))
    assert (caught.value.provider, caught.value.kind) == ("ses", FailureKind.CONFIG)
    assert caught.value.message.startswith("MessageRejected:")


def test_an_unreachable_endpoint_is_transient(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # AWS_ENDPOINT_URL alone decides where boto3 goes: here, nowhere.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderError) as caught:
        SesProvider("us-east-1", timeout_seconds=1).send(_email())
    assert caught.value.kind is FailureKind.TRANSIENT
