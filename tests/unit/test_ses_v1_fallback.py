"""The SES provider falls back to SES v1 SendRawEmail where v2 is not emulated (issue 22).

LocalStack's free build answers SES v2 with 501; botocore's Stubber plays
that answer here (the LocalStack run of the integration tests sends for real).
"""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from mailroom.adapters.providers.base import ProviderError
from mailroom.adapters.providers.ses import SesProvider
from mailroom.domain.mime import OutgoingEmail

EMAIL = OutgoingEmail(
    message_id="<m1@example.com>",
    envelope_from="noreply@example.com",
    envelope_recipients=["ada@example.com"],
    mime=b"Subject: hi\r\n\r\nhello\r\n",
)


def _provider() -> tuple[SesProvider, Stubber, Stubber]:
    provider = SesProvider("us-east-1")
    credentials = {"aws_access_key_id": "x", "aws_secret_access_key": "x"}
    provider._client = boto3.client("sesv2", region_name="us-east-1", **credentials)
    provider._v1_client = boto3.client("ses", region_name="us-east-1", **credentials)
    return provider, Stubber(provider._client), Stubber(provider._v1_client)


def test_a_501_from_ses_v2_sends_the_same_mime_through_ses_v1() -> None:
    # GIVEN an endpoint whose SES v2 is not implemented
    provider, v2, v1 = _provider()
    v2.add_client_error("send_email", "InternalFailure", "not included in your plan", 501)
    v1.add_response(
        "send_raw_email",
        {"MessageId": "v1-id"},
        {
            "Source": EMAIL.envelope_from,
            "Destinations": EMAIL.envelope_recipients,
            "RawMessage": {"Data": EMAIL.mime},
        },
    )
    # the next send goes to v1 at once, without asking v2 again
    v1.add_response("send_raw_email", {"MessageId": "v1-second"})
    with v2, v1:
        # WHEN two messages are sent
        first = provider.send(EMAIL)
        second = provider.send(EMAIL)
    # THEN both went through SES v1
    assert (first.provider_msg_id, second.provider_msg_id) == ("v1-id", "v1-second")
    assert provider.uses_v1


def test_a_refusal_from_ses_v2_is_not_a_reason_to_fall_back() -> None:
    # GIVEN SES v2 refusing the message itself
    provider, v2, v1 = _provider()
    v2.add_client_error("send_email", "MessageRejected", "Email address is not verified", 400)
    with v2, v1, pytest.raises(ProviderError):
        # WHEN it is sent THEN the refusal stands and v1 is never tried
        provider.send(EMAIL)
    assert not provider.uses_v1
