"""Accepting a send request: validate, write the row, queue the id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.queue import MessageQueue
from mailroom.adapters.templates import TemplateStore
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import DependencyUnavailable, EnqueueFailed, InvalidRequest
from mailroom.domain.model import Client, EventType, Message, MessageStatus


@dataclass(frozen=True, slots=True)
class SendLimits:
    max_recipients: int
    default_from: str


def accept_message(
    uow: UnitOfWork,
    queue: MessageQueue,
    templates: TemplateStore,
    limits: SendLimits,
    *,
    client: Client,
    request: SendRequest,
    trace_id: str,
) -> Message:
    """Store the message as ``queued`` and put it on the send queue.

    The row is committed before the queue is told, so the worker always finds
    it. If the queue then refuses, the row is marked ``failed`` with the reason
    and the caller gets 503: never a row that claims to be queued but is not.
    A crash between the two leaves a ``queued`` row with no queue message; the
    reconciler of the reliability issue re-enqueues those.
    """
    if request.recipient_count > limits.max_recipients:
        raise InvalidRequest(
            f"at most {limits.max_recipients} recipients (to, cc and bcc together)",
            details=[{"field": "to", "message": "too many recipients"}],
        )
    templates.get(request.template)  # UnknownTemplate before anything is written

    message = Message(
        id=uuid.uuid4(),
        client_id=client.id,
        trace_id=trace_id,
        template_name=request.template,
        from_address=request.from_ or limits.default_from,
        to=request.to,
        cc=request.cc,
        bcc=request.bcc,
        reply_to=request.reply_to,
        subject=request.subject,
        props=request.props,
        metadata=dict(request.metadata),
    )
    with uow:
        uow.messages.add(message)
        uow.messages.append_event(message.id, EventType.ACCEPTED, {"trace_id": trace_id})
        uow.commit()

    try:
        queue.enqueue(message.id, trace_id)
    except DependencyUnavailable as error:
        message.status = MessageStatus.FAILED
        message.last_error = f"enqueue_failed: {error.message}"
        with uow:
            uow.messages.save_outcome(message)
            uow.messages.append_event(
                message.id, EventType.ENQUEUE_FAILED, {"error": error.message}
            )
            uow.commit()
        raise EnqueueFailed(
            "the message could not be queued and was not sent; it is marked failed, try again",
            details=[{"message_id": str(message.id)}],
        ) from error
    return message
