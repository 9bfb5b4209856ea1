"""Reconciling provider events with messages: find, deduplicate, apply forward only.

One batch (one provider request) is one transaction, committed at the end:
either every event of the request is recorded or none is, and the provider's
retry of a failed request finds nothing half-applied. Re-applying is safe
anyway: the (provider, event id, recipient) key lets each event in once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.feedback import (
    HISTORY_EVENT_FOR_FEEDBACK,
    RECIPIENT_STATUS_FOR_EVENT,
    DeliveryEvent,
    RecipientOutcome,
    Suppression,
    message_uuid_from_header,
    provider_id_candidates,
    status_after,
    statuses_below,
    suppression_for,
)
from mailroom.domain.model import Message, MessageStatus


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    """What became of the events of one request; the webhook's 200 body."""

    received: int = 0
    applied: int = 0
    duplicates: int = 0
    orphans: int = 0
    adopted: int = 0  # earlier orphans whose message this request identified


def record_delivery_events(uow: UnitOfWork, events: Sequence[DeliveryEvent]) -> FeedbackSummary:
    applied = duplicates = orphans = adopted = 0
    with uow:
        for event in events:
            message = _locate(uow, event)
            # A message still queued belongs to the worker, which is about to
            # write its own outcome unconditionally; the event waits as an
            # orphan and is adopted by the next event about the message.
            owner = message if message is not None and _settled(message) else None
            if not uow.feedback.add(event, message_id=owner.id if owner else None):
                duplicates += 1
                continue
            if owner is None:
                orphans += 1
                continue
            if event.message_id:
                for orphan in uow.feedback.claim_orphans(
                    event.provider, provider_id_candidates(event.message_id), owner.id
                ):
                    _apply(uow, owner, orphan)
                    adopted += 1
            _apply(uow, owner, event)
            applied += 1
        uow.commit()
    return FeedbackSummary(
        received=len(events),
        applied=applied,
        duplicates=duplicates,
        orphans=orphans,
        adopted=adopted,
    )


def adopt_orphans(uow: UnitOfWork, message_id: uuid.UUID) -> int:
    """Apply the orphans stored for a message before its provider id was known.

    For callers that know a message just settled (a reconciler); reconciling
    a later event about the message does the same on its own.
    """
    with uow:
        message = uow.messages.get(message_id)
        if message is None or not _settled(message) or not message.provider_msg_id:
            return 0
        orphans = uow.feedback.claim_orphans(
            message.provider or "", provider_id_candidates(message.provider_msg_id), message.id
        )
        for orphan in orphans:
            _apply(uow, message, orphan)
        uow.commit()
    return len(orphans)


def _settled(message: Message) -> bool:
    return message.status not in (MessageStatus.QUEUED, MessageStatus.SENDING)


def _locate(uow: UnitOfWork, event: DeliveryEvent) -> Message | None:
    """The message by the provider's id for it; else by the Message-ID we wrote."""
    message_id = None
    if event.message_id:
        message_id = uow.feedback.find_message_id(
            event.provider, provider_id_candidates(event.message_id)
        )
    if message_id is None:
        # SES relaying our SMTP mail reports its own id, and the provider id
        # is unknown until the worker commits; our Message-ID names the row.
        message_id = message_uuid_from_header(event.message_id_header)
    return uow.messages.get(message_id) if message_id is not None else None


def _apply(uow: UnitOfWork, message: Message, event: DeliveryEvent) -> None:
    uow.messages.append_event(
        message.id, HISTORY_EVENT_FOR_FEEDBACK[event.event_type], _history_detail(event)
    )
    target = status_after(message.status, event.event_type)
    # The guarded UPDATE re-checks the stored status, so a concurrent request
    # that already moved it further cannot be undone by this one.
    if target is not None and uow.feedback.advance_status(
        message.id, target, statuses_below(target)
    ):
        message.status = target
    address = event.recipient_address
    if address is None:
        return
    outcome = RECIPIENT_STATUS_FOR_EVENT.get(event.event_type)
    if outcome is not None:
        uow.recipients.record(
            message.id,
            RecipientOutcome(
                address=address,
                status=outcome,
                kind="other",  # only used if the recipient had no row yet
                reject_reason=event.reject_reason,
                response=event.mta_response or event.description,
            ),
        )
    rule = suppression_for(event, message.client_id)
    if rule is not None:
        reason, client_id = rule
        uow.suppressions.upsert(
            Suppression(
                address=address,
                reason=reason,
                # Test traffic's entries (issue 15) bind only the client whose
                # test caused them, and only its test mail: never live mail,
                # never another client's tests.
                client_id=message.client_id if message.is_test else client_id,
                source=f"{event.provider}:{event.event_id}"[:255],
                is_test=message.is_test,
            )
        )


def _history_detail(event: DeliveryEvent) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "provider": event.provider,
        "provider_event": event.event_type.value,
        "provider_event_id": event.event_id,
        "recipient": event.recipient_address,
        "reject_reason": event.reject_reason.value if event.reject_reason else None,
        "response": event.mta_response,
        "description": event.description,
        "occurred_at": event.timestamp.isoformat() if event.timestamp else None,
    }
    return {key: value for key, value in detail.items() if value is not None}
