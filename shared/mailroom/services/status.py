"""What a client may see of its messages."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailroom.adapters.db.feedback_repositories import MessageFilter
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.errors import InvalidRequest, MessageNotFound
from mailroom.domain.feedback import (
    RECIPIENT_STATUS_FOR_MESSAGE,
    RecipientOutcome,
    RecipientStatus,
    bare_address,
)
from mailroom.domain.model import Message, MessageEvent

MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class MessageHistory:
    message: Message
    events: list[MessageEvent]
    recipients: list[RecipientOutcome] = field(default_factory=list)


def message_history(uow: UnitOfWork, *, client_id: uuid.UUID, message_id: str) -> MessageHistory:
    """The message with its events; not found for anyone but its owner."""
    try:
        parsed_id = uuid.UUID(message_id)
    except ValueError:
        raise MessageNotFound(f"no message with id '{message_id}'") from None
    with uow:
        message = uow.messages.get_for_client(client_id, parsed_id)
        if message is None:
            # Another client's message reads as missing: ids are not an oracle.
            raise MessageNotFound(f"no message with id '{message_id}'")
        return MessageHistory(
            message=message,
            events=uow.messages.events(parsed_id),
            recipients=recipient_outcomes(uow, message),
        )


def recipient_outcomes(uow: UnitOfWork, message: Message) -> list[RecipientOutcome]:
    """Every recipient with what is known about it (inside the caller's ``with uow``).

    A recipient no provider has reported on reads as the message does (queued,
    sent or failed); the addresses dropped as suppressed come after the rest.
    """
    stored = {outcome.address: outcome for outcome in uow.recipients.for_message(message.id)}
    fallback = RECIPIENT_STATUS_FOR_MESSAGE[message.status]
    since = _fallback_since(message, fallback)
    outcomes: list[RecipientOutcome] = []
    for kind, values in (("to", message.to), ("cc", message.cc), ("bcc", message.bcc)):
        for value in values:
            address = bare_address(value)
            known = stored.pop(address, None)
            outcomes.append(_resolved(known, address, kind, fallback, since))
    outcomes.extend(
        _resolved(known, known.address, known.kind, fallback, since) for known in stored.values()
    )
    return outcomes


def _fallback_since(message: Message, fallback: RecipientStatus) -> datetime | None:
    """When a recipient that reads as its message does last changed outcome.

    Taken from the message's own times rather than written to every recipient
    row by the worker: the worker's batch write stays one UPDATE of messages,
    and a later change of the message alone (a bounce of another recipient
    moves it to ``bounced``) does not move this recipient's time.
    """
    if fallback is RecipientStatus.QUEUED:
        return message.created_at
    if fallback is RecipientStatus.SENT and message.sent_at is not None:
        return message.sent_at
    return message.updated_at


def _resolved(
    known: RecipientOutcome | None,
    address: str,
    kind: str,
    fallback: RecipientStatus,
    since: datetime | None,
) -> RecipientOutcome:
    if known is None or known.status is None:
        return RecipientOutcome(address=address, status=fallback, kind=kind, updated_at=since)
    return RecipientOutcome(
        address=address,
        status=known.status,
        kind=known.kind,
        reject_reason=known.reject_reason,
        response=known.response,
        updated_at=known.updated_at,
    )


def message_events(uow: UnitOfWork, *, client_id: uuid.UUID, message_id: str) -> list[MessageEvent]:
    """The message's history, oldest first; not found for anyone but its owner."""
    return message_history(uow, client_id=client_id, message_id=message_id).events


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: list[Message]
    next_cursor: str | None


def list_messages(
    uow: UnitOfWork,
    *,
    client_id: uuid.UUID,
    where: MessageFilter,
    cursor: str | None = None,
    limit: int = 50,
) -> MessagePage:
    """The client's messages, newest first, one page at a time.

    The cursor is the (created_at, id) of the last message of the previous
    page: stable while new messages arrive, unlike an offset.
    """
    limit = max(1, min(limit, MAX_PAGE))
    where = MessageFilter(
        status=where.status,
        recipient=bare_address(where.recipient) if where.recipient else where.recipient,
        since=_in_utc("since", where.since),
        until=_in_utc("until", where.until),
    )
    with uow:
        found = uow.message_queries.list_for_client(
            client_id, where, before=decode_cursor(cursor), limit=limit + 1
        )
    page = found[:limit]
    next_cursor = None
    if len(found) > limit and page[-1].created_at is not None:
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id)
    return MessagePage(messages=page, next_cursor=next_cursor)


def _in_utc(field: str, moment: datetime | None) -> datetime | None:
    """``moment`` in UTC; InvalidRequest if it has no UTC equivalent.

    0001-01-01T00:00:00+14:00 is a valid datetime whose UTC instant is
    before year 1: converting it (as the database driver does) overflows.
    """
    if moment is None or moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(
            f"{field} is outside the years 1 to 9999 in UTC",
            details=[{"field": field, "message": "out of range"}],
        ) from None


def encode_cursor(created_at: datetime, message_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{message_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, _, message_id = raw.partition("|")
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is None:
            raise ValueError("naive cursor time")
        return parsed.astimezone(UTC), uuid.UUID(message_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise InvalidRequest(
            "cursor is not one this API returned",
            details=[{"field": "cursor", "message": "invalid cursor"}],
        ) from None
