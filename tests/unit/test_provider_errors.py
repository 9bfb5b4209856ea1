"""How provider answers map onto transient / permanent / config, table by table.

The answers on the wire are tested against real peers in tests/integration
(test_provider_http.py, test_provider_ses.py, test_smtp_failures.py); these
cover the codes those peers cannot be made to send.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from mailroom.adapters.providers.base import FailureKind
from mailroom.adapters.providers.https import kind_for_status
from mailroom.adapters.providers.sendgrid import mail_send_body
from mailroom.adapters.providers.ses import classify_ses_error
from mailroom.domain.mime import OutgoingEmail


def _ses_error(code: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "SendEmail",
    )


@pytest.mark.parametrize(
    ("code", "message", "status", "kind"),
    [
        ("TooManyRequestsException", "Too many requests", 429, FailureKind.TRANSIENT),
        ("Throttling", "Rate exceeded", 400, FailureKind.TRANSIENT),
        ("LimitExceededException", "Daily message quota exceeded", 400, FailureKind.TRANSIENT),
        ("InternalFailure", "", 500, FailureKind.TRANSIENT),
        ("SomethingNew", "", 503, FailureKind.TRANSIENT),
        ("AccountSuspendedException", "", 400, FailureKind.CONFIG),
        ("SendingPausedException", "", 400, FailureKind.CONFIG),
        ("MailFromDomainNotVerifiedException", "", 400, FailureKind.CONFIG),
        ("UnrecognizedClientException", "The security token is invalid", 403, FailureKind.CONFIG),
        ("SignatureDoesNotMatch", "", 403, FailureKind.CONFIG),
        ("SomethingNew", "", 403, FailureKind.CONFIG),
        (
            "MessageRejected",
            "Email address is not verified. The following identities failed the check",
            400,
            FailureKind.CONFIG,
        ),
        ("MessageRejected", "Message contains a virus", 400, FailureKind.PERMANENT),
        ("BadRequestException", "Invalid address", 400, FailureKind.PERMANENT),
        ("SomethingNew", "", 400, FailureKind.PERMANENT),
    ],
)
def test_ses_error_codes(code: str, message: str, status: int, kind: FailureKind) -> None:
    error = classify_ses_error(_ses_error(code, message, status))
    assert (error.provider, error.kind) == ("ses", kind)
    assert error.message == f"{code}: {message}"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, FailureKind.PERMANENT),
        (401, FailureKind.CONFIG),
        (403, FailureKind.CONFIG),
        (404, FailureKind.CONFIG),
        (408, FailureKind.TRANSIENT),
        (413, FailureKind.PERMANENT),
        (415, FailureKind.PERMANENT),
        (429, FailureKind.TRANSIENT),
        (500, FailureKind.TRANSIENT),
        (502, FailureKind.TRANSIENT),
        (503, FailureKind.TRANSIENT),
        (301, FailureKind.CONFIG),
    ],
)
def test_https_status_codes(status: int, kind: FailureKind) -> None:
    assert kind_for_status(status) is kind


def test_sendgrid_never_lists_an_address_twice_in_one_personalization() -> None:
    # GIVEN a message naming the same person in To and Cc, and in the envelope
    mime = (
        b"From: a@example.com\r\nTo: Ada <ada@example.com>\r\nCc: ADA@example.com\r\n"
        b"Subject: s\r\nMessage-ID: <m@example.com>\r\n"
        b"Content-Type: text/plain\r\n\r\nhello\r\n"
    )
    email = OutgoingEmail("<m@example.com>", "a@example.com", ["ada@example.com"], mime)
    # WHEN it becomes a Mail Send body
    body = mail_send_body(email)
    # THEN the address appears once (SendGrid refuses repeats with 400)
    assert body["personalizations"] == [{"to": [{"email": "ada@example.com", "name": "Ada"}]}]
    assert body["content"] == [{"type": "text/plain", "value": "hello\n"}]
