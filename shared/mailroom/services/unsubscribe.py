"""One-click unsubscribe (RFC 8058): a verified token suppresses its message's recipients."""

from __future__ import annotations

from datetime import UTC, datetime

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.errors import UnsubscribeLinkNotFound
from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType, bare_address
from mailroom.domain.return_path import SigningKeyring, verify_unsubscribe_token
from mailroom.services.feedback import FeedbackSummary, record_delivery_events

PROVIDER = "unsubscribe"


def unsubscribe(
    uow: UnitOfWork, keyring: SigningKeyring | None, token: str, *, via: str
) -> FeedbackSummary:
    """Suppress (for the message's client) every recipient of the token's message.

    A forged or unknown token raises NotFound and writes nothing. Clicking
    twice applies once: the event is keyed by the message and recipient.
    Bulk mail has one recipient (the send API refuses more), so the token
    names exactly the person who clicked.
    """
    message_id = verify_unsubscribe_token(keyring, token) if keyring is not None else None
    if message_id is None:
        raise UnsubscribeLinkNotFound("no such unsubscribe link")
    with uow:
        message = uow.messages.get(message_id)
    if message is None:
        raise UnsubscribeLinkNotFound("no such unsubscribe link")
    now = datetime.now(UTC)
    events = [
        DeliveryEvent(
            provider=PROVIDER,
            event_type=FeedbackEventType.UNSUBSCRIBED,
            event_id=str(message.id),
            timestamp=now,
            message_id=None,
            recipient=bare_address(address),
            description=f"one-click unsubscribe ({via})",
            # The way domain/feedback.py finds our own messages.
            message_id_header=f"<{message.id}@unsubscribe>",
            raw={"via": via},
        )
        for address in message.envelope_recipients
    ]
    return record_delivery_events(uow, events)
