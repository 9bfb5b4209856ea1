"""Sending one queued message: render, build MIME, hand to the provider, record."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.providers.base import EmailProvider, FailureKind, ProviderError
from mailroom.adapters.templates import TemplateRenderer, TemplateStore
from mailroom.domain.errors import RenderError, UnknownTemplate
from mailroom.domain.mime import build_mime
from mailroom.domain.model import EventType, Message, MessageStatus


class DeliveryResult(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    RETRY = "retry"  # still queued; the queue must deliver it again later
    ALREADY_DONE = "already_done"  # a duplicate delivery of a finished message
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    message_id: uuid.UUID
    result: DeliveryResult
    error: str | None = None
    trace_id: str | None = None


def deliver_message(
    uow: UnitOfWork,
    templates: TemplateStore,
    renderer: TemplateRenderer,
    provider: EmailProvider,
    *,
    message_id: uuid.UUID,
    max_attempts: int,
) -> DeliveryOutcome:
    with uow:
        message = uow.messages.get(message_id)
    if message is None:
        return DeliveryOutcome(message_id, DeliveryResult.MISSING, "no such message")
    if message.status.is_final_for_sending:
        return DeliveryOutcome(message_id, DeliveryResult.ALREADY_DONE, trace_id=message.trace_id)

    try:
        rendered = renderer.render(templates.get(message.template_name), message.props)
    except (RenderError, UnknownTemplate) as error:
        # Rendering is deterministic: another try would fail the same way.
        return _finish_failed(uow, message, f"{error.code}: {error.message}", attempted=False)
    if message.subject:
        rendered = type(rendered)(subject=message.subject, html=rendered.html, text=rendered.text)
    email = build_mime(message, rendered)
    message.subject = rendered.subject

    try:
        receipt = provider.send(email)
    except ProviderError as error:
        message.attempts += 1
        reason = f"{error.kind.value}: {error}"
        if error.kind is FailureKind.PERMANENT or message.attempts >= max_attempts:
            return _finish_failed(uow, message, reason, attempted=True, provider=error.provider)
        # Transient and configuration failures are retried: a provider outage
        # or a credential being rotated should not fail the customer's mail.
        message.last_error = reason
        with uow:
            uow.messages.save_outcome(message)
            uow.messages.append_event(
                message.id,
                EventType.ATTEMPT_FAILED,
                {
                    "provider": error.provider,
                    "kind": error.kind.value,
                    "error": error.message,
                    "attempt": message.attempts,
                },
            )
            uow.commit()
        return DeliveryOutcome(message.id, DeliveryResult.RETRY, reason, trace_id=message.trace_id)

    message.attempts += 1
    message.status = MessageStatus.SENT
    message.provider = receipt.provider
    message.provider_msg_id = receipt.provider_msg_id
    message.sent_at = datetime.now(UTC)
    message.last_error = None
    with uow:
        uow.messages.save_outcome(message)
        uow.messages.append_event(
            message.id,
            EventType.SENT,
            {
                "provider": receipt.provider,
                "provider_msg_id": receipt.provider_msg_id,
                "attempt": message.attempts,
            },
        )
        uow.commit()
    return DeliveryOutcome(message.id, DeliveryResult.SENT, trace_id=message.trace_id)


def _finish_failed(
    uow: UnitOfWork,
    message: Message,
    reason: str,
    *,
    attempted: bool,
    provider: str | None = None,
) -> DeliveryOutcome:
    message.status = MessageStatus.FAILED
    message.last_error = reason
    detail: dict[str, object] = {"error": reason, "attempts": message.attempts}
    if provider:
        detail["provider"] = provider
    with uow:
        uow.messages.save_outcome(message)
        uow.messages.append_event(message.id, EventType.FAILED, detail)
        uow.commit()
    return DeliveryOutcome(message.id, DeliveryResult.FAILED, reason, trace_id=message.trace_id)
