"""SendGrid's v3 Mail Send API over HTTPS.

Mail Send takes JSON, not MIME, so the message is read back out of the MIME
the other providers send as is: subject, From, To, Cc, Reply-To, both bodies
and our Message-ID come from the same bytes, so every provider carries the
same message. Bcc recipients are the envelope recipients not named in To or
Cc. References: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
(request), .../how-to-use-the-sendgrid-v3-api/responses (status codes),
https://www.twilio.com/docs/sendgrid/glossary/x-message-id (the id).

International addresses: SendGrid documents no SMTPUTF8 support, and its
relay is reported to refuse a non-ASCII local part (501 "Recipient syntax
error"), so such a message is refused here as permanent; IDN domains go as
punycode and display names decoded (JSON carries them as text), read from
the ASCII form of the MIME.
"""

from __future__ import annotations

import json
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import urllib3

from mailroom.adapters.providers.base import (
    FailureKind,
    ProviderError,
    ProviderReceipt,
    refuse_smtputf8,
)
from mailroom.adapters.providers.https import HttpsProvider
from mailroom.domain.mime import OutgoingEmail

SEND_PATH = "/v3/mail/send"


class SendGridProvider(HttpsProvider):
    name = "sendgrid"

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str = "https://api.sendgrid.com",
        timeout_seconds: float = 10.0,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        super().__init__(base_url, timeout_seconds=timeout_seconds, pool=pool)
        self._api_key = api_key

    def send(self, email: OutgoingEmail) -> ProviderReceipt:
        if not self._api_key:
            raise ProviderError(self.name, FailureKind.CONFIG, "SENDGRID_API_KEY is not set")
        refuse_smtputf8(self.name, email)
        response = self._post(
            SEND_PATH,
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            body=json.dumps(mail_send_body(email)).encode("utf-8"),
        )
        # 202 carries no body; the id is a header, and the events SendGrid
        # later reports carry it as the start of their sg_message_id.
        # Without it the message was still accepted: never fail (and so resend)
        # it; our Message-ID, also sent as a custom arg, identifies it instead.
        provider_id = response.headers.get("X-Message-Id") or email.message_id.strip("<>")
        return ProviderReceipt(provider=self.name, provider_msg_id=provider_id)

    def describe_error(self, body: bytes) -> str:
        # {"errors": [{"message": "...", "field": "...", "help": ...}]}
        try:
            errors = json.loads(body)["errors"]
            return "; ".join(
                f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
                for e in errors
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return super().describe_error(body)


def mail_send_body(email: OutgoingEmail) -> dict[str, Any]:
    """The Mail Send JSON for a message, read from its MIME."""
    parsed = BytesParser(policy=policy.default).parsebytes(email.mime)
    assert isinstance(parsed, EmailMessage)
    seen: set[str] = set()
    to = _unique(_addresses(parsed, "To"), seen)
    cc = _unique(_addresses(parsed, "Cc"), seen)
    bcc = _unique([Address(addr_spec=r) for r in email.envelope_recipients], seen)
    personalization: dict[str, Any] = {"to": to}
    if cc:
        personalization["cc"] = cc
    if bcc:
        personalization["bcc"] = bcc

    (sender,) = _addresses(parsed, "From")
    content = [
        # The MIME's CRLF line ends are wire format, not text.
        {"type": f"text/{subtype}", "value": part.get_content().replace("\r\n", "\n")}
        for subtype in ("plain", "html")  # SendGrid wants text/plain first
        if (part := parsed.get_body(preferencelist=(subtype,))) is not None
    ]
    body: dict[str, Any] = {
        "personalizations": [personalization],
        "from": _email_object(sender),
        "subject": str(parsed["Subject"] or ""),
        "content": content,
        # Not among SendGrid's reserved headers: the recipient sees the same
        # Message-ID whichever provider carried the message.
        "headers": {"Message-ID": email.message_id},
        "custom_args": {"mailroom_message_id": email.message_id.strip("<>")},
    }
    reply_to = _addresses(parsed, "Reply-To")
    if reply_to:
        body["reply_to_list"] = [_email_object(address) for address in reply_to]
    return body


def _addresses(message: EmailMessage, header: str) -> list[Address]:
    value = message.get(header)
    if value is None:
        return []
    return list(value.addresses)


def _unique(addresses: list[Address], seen: set[str]) -> list[dict[str, str]]:
    # SendGrid refuses an address that appears twice in one personalization.
    unique = []
    for address in addresses:
        key = address.addr_spec.lower()
        if key not in seen:
            seen.add(key)
            unique.append(_email_object(address))
    return unique


def _email_object(address: Address) -> dict[str, str]:
    obj = {"email": address.addr_spec}
    if address.display_name:
        obj["name"] = address.display_name
    return obj
