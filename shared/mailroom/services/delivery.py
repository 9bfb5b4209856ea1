"""Sending one queued message: render, build MIME, hand to the provider, record."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.operator_signals import SignalKey
from mailroom.adapters.providers.base import FailureKind
from mailroom.adapters.templates import TemplateRenderer, TemplateStore
from mailroom.domain.errors import InvalidTemplate, RenderError, UnknownTemplate
from mailroom.domain.mime import build_mime
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.domain.retry import Backoff
from mailroom.services import suppression
from mailroom.services.provider_chain import ChainResult, ProviderChain

DEFAULT_BACKOFF = Backoff()
# One event to write: its type and detail.
EventRecord = tuple[EventType, dict[str, object]]


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
    # RETRY: how long the queue should hold the record back (the backoff).
    retry_after_seconds: int | None = None
    # FAILED because retries ran out: the record belongs on the DLQ.
    dead_letter: bool = False


def deliver_message(
    uow: UnitOfWork,
    templates: TemplateStore,
    renderer: TemplateRenderer,
    providers: ProviderChain,
    *,
    message_id: uuid.UUID,
    max_attempts: int,
    backoff: Backoff = DEFAULT_BACKOFF,
    last_receive: bool = False,
) -> DeliveryOutcome:
    """Render, send through the provider chain, record the outcome.

    ``last_receive`` says SQS will not hand this record over again (it is at
    the queue's maxReceiveCount): a retry is then impossible, and the message
    fails with its last error instead of being left queued.
    """
    with uow:
        message = uow.messages.get(message_id)
    if message is None:
        return DeliveryOutcome(message_id, DeliveryResult.MISSING, "no such message")
    if message.status.is_final_for_sending:
        return DeliveryOutcome(message_id, DeliveryResult.ALREADY_DONE, trace_id=message.trace_id)
    # A bounce or complaint may have suppressed a recipient since the message
    # was accepted: drop those (recorded per recipient), fail if none is left.
    if not suppression.screen_before_send(uow, message):
        return _finish_failed(uow, message, suppression.SUPPRESSED_ERROR, attempted=False)

    try:
        source = templates.get(message.template_name, message.template_version)
        rendered = renderer.render(source, message.props)
    except (RenderError, UnknownTemplate, InvalidTemplate) as error:
        # Rendering is deterministic: another try would fail the same way. A
        # render_timeout fails this message only; the batch goes on.
        return _finish_failed(uow, message, f"{error.code}: {error.message}", attempted=False)
    if message.subject:
        rendered = type(rendered)(subject=message.subject, html=rendered.html, text=rendered.text)
    email = build_mime(message, rendered)
    message.subject = rendered.subject

    with uow:
        client = uow.clients.get(message.client_id)
    result = providers.send(
        email,
        client_order=client.provider_order if client else None,
        message_id=str(message.id),
    )
    # One attempt is one pass through the chain, however many providers it
    # tried (each failed try is its own event below).
    message.attempts += 1
    tries = _provider_events(result, message.attempts)
    if result.receipt is not None:
        return _record_sent(uow, message, result, tries)

    reason = result.summary
    last = result.failures[-1] if result.failures else None
    if result.permanent_failure is not None:
        return _finish_failed(
            uow,
            message,
            reason,
            attempted=True,
            provider=result.permanent_failure.provider,
            events=tries,
        )
    if message.attempts >= max_attempts or last_receive:
        return _finish_failed(
            uow,
            message,
            reason,
            attempted=True,
            provider=last.provider if last else None,
            events=tries,
            retries_exhausted=True,
        )
    # Transient and configuration failures are retried: a provider outage or
    # a credential being rotated should not fail the customer's mail.
    delay = backoff.delay_seconds(message.attempts, random.random())  # noqa: S311 - jitter
    message.last_error = reason
    detail: dict[str, object] = {
        "attempt": message.attempts,
        "error": reason,
        "retry_in_seconds": delay,
    }
    if last is not None:
        detail.update(provider=last.provider, kind=last.kind.value)
    if result.skipped:
        detail["skipped"] = list(result.skipped)
    with uow:
        uow.messages.save_outcome(message)
        _append_events(uow, message, [*tries, (EventType.ATTEMPT_FAILED, detail)])
        uow.commit()
    return DeliveryOutcome(
        message.id,
        DeliveryResult.RETRY,
        reason,
        trace_id=message.trace_id,
        retry_after_seconds=delay,
    )


def _record_sent(
    uow: UnitOfWork, message: Message, result: ChainResult, tries: Sequence[EventRecord]
) -> DeliveryOutcome:
    assert result.receipt is not None
    receipt = result.receipt
    message.status = MessageStatus.SENT
    message.provider = receipt.provider
    message.provider_msg_id = receipt.provider_msg_id
    message.sent_at = datetime.now(UTC)
    message.last_error = None
    detail: dict[str, object] = {
        "provider": receipt.provider,
        "provider_msg_id": receipt.provider_msg_id,
        "attempt": message.attempts,
    }
    if result.failures:
        detail["failed_over_from"] = [failure.provider for failure in result.failures]
    if result.skipped:
        detail["skipped"] = list(result.skipped)
    with uow:
        uow.messages.save_outcome(message)
        _append_events(uow, message, [*tries, (EventType.SENT, detail)])
        uow.commit()
    return DeliveryOutcome(message.id, DeliveryResult.SENT, trace_id=message.trace_id)


def _provider_events(result: ChainResult, attempt: int) -> list[EventRecord]:
    """One event per provider that was tried and failed, with its error."""
    events: list[EventRecord] = []
    for failure in result.failures:
        detail: dict[str, object] = {
            "provider": failure.provider,
            "kind": failure.kind.value,
            "error": failure.message,
            "attempt": attempt,
        }
        if failure.kind is FailureKind.CONFIG:
            # The operator-visible alarm's row: the log line and metric carry
            # the same key (services/provider_chain.py raises them).
            detail["alarm"] = SignalKey.PROVIDER_CONFIG_ERROR.value
            events.append((EventType.PROVIDER_MISCONFIGURED, detail))
        else:
            events.append((EventType.PROVIDER_FAILED, detail))
    return events


def _append_events(uow: UnitOfWork, message: Message, events: Sequence[EventRecord]) -> None:
    for event_type, detail in events:
        uow.messages.append_event(message.id, event_type, dict(detail))


def _finish_failed(
    uow: UnitOfWork,
    message: Message,
    reason: str,
    *,
    attempted: bool,
    provider: str | None = None,
    events: Sequence[EventRecord] = (),
    retries_exhausted: bool = False,
) -> DeliveryOutcome:
    message.status = MessageStatus.FAILED
    message.last_error = reason
    detail: dict[str, object] = {"error": reason, "attempts": message.attempts}
    if provider:
        detail["provider"] = provider
    if retries_exhausted:
        detail["retries_exhausted"] = True
    with uow:
        uow.messages.save_outcome(message)
        _append_events(uow, message, [*events, (EventType.FAILED, detail)])
        uow.commit()
    return DeliveryOutcome(
        message.id,
        DeliveryResult.FAILED,
        reason,
        trace_id=message.trace_id,
        dead_letter=retries_exhausted,
    )
