"""What a client may see of its messages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.errors import MessageNotFound
from mailroom.domain.model import Message, MessageEvent


@dataclass(frozen=True, slots=True)
class MessageHistory:
    message: Message
    events: list[MessageEvent]


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
        return MessageHistory(message=message, events=uow.messages.events(parsed_id))
