"""The MIME form of a message, the same bytes whichever provider carries it."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formatdate, getaddresses

from mailroom.domain.model import Message, RenderedEmail


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """What a provider needs: the envelope and the finished MIME bytes."""

    message_id: str
    envelope_from: str
    envelope_recipients: list[str]
    mime: bytes


def message_id_header(message: Message) -> str:
    """Our own Message-ID: unique per message, so a retry carries the same one."""
    domain = _address_of(message.from_address).rpartition("@")[2] or "mailroom.local"
    return f"<{message.id}@{domain}>"


def build_mime(message: Message, rendered: RenderedEmail) -> OutgoingEmail:
    email = EmailMessage(policy=SMTP)
    email["From"] = message.from_address
    email["To"] = ", ".join(message.to)
    if message.cc:
        email["Cc"] = ", ".join(message.cc)
    if message.reply_to:
        email["Reply-To"] = ", ".join(message.reply_to)
    email["Subject"] = rendered.subject
    email["Date"] = (
        format_datetime(message.created_at) if message.created_at else formatdate(localtime=False)
    )
    email["Message-ID"] = message_id_header(message)
    email.set_content(rendered.text)
    email.add_alternative(rendered.html, subtype="html")
    return OutgoingEmail(
        message_id=email["Message-ID"],
        envelope_from=_address_of(message.from_address),
        envelope_recipients=[_address_of(raw) for raw in message.envelope_recipients],
        mime=email.as_bytes(),
    )


def _address_of(header_value: str) -> str:
    return getaddresses([header_value])[0][1]
