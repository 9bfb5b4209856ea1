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

from mailroom.adapters.db.feedback_repositories import MessageState
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.feedback import (
    HISTORY_EVENT_FOR_FEEDBACK,
    RECIPIENT_RANK,
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

# A message as reconciliation reads it: a MessageState, or a whole Message.
Owner = Message | MessageState


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    """What became of the events of one request; the webhook's 200 body."""

    received: int = 0
    applied: int = 0
    duplicates: int = 0
    orphans: int = 0
    adopted: int = 0  # earlier orphans whose message this request identified


def record_delivery_events(uow: UnitOfWork, events: Sequence[DeliveryEvent]) -> FeedbackSummary:
    """Reconcile one batch in one transaction, with a few multi-row statements (issue 21).

    The same outcome as applying the events one by one in order: each
    message's status folds forward over its events, each recipient keeps the
    highest-ranked outcome (the first of equal rank), and a message's earlier
    orphans are applied before the batch's own events about it. On
    PostgreSQL that is about seven statements whatever the batch's size,
    where it was five or more per event.
    """
    with uow:
        summary = _reconcile(uow, events)
        uow.commit()
    return summary


def _reconcile(uow: UnitOfWork, events: Sequence[DeliveryEvent]) -> FeedbackSummary:
    owners = _locate_all(uow, events)
    # The deduplication key, as the table's unique index has it: a second
    # copy within the batch is a duplicate like one stored before.
    seen: set[tuple[str, str, str]] = set()
    fresh: list[tuple[DeliveryEvent, MessageState | None]] = []
    for event, owner in zip(events, owners, strict=True):
        key = (event.provider, event.event_id, event.recipient_address or "")
        if key not in seen:
            seen.add(key)
            fresh.append((event, owner))
    added = uow.feedback.add_many([(e, o.id if o else None) for e, o in fresh])
    stored = [pair for pair, new in zip(fresh, added, strict=True) if new]
    orphans = sum(1 for _, owner in stored if owner is None)
    owned = [(event, owner) for event, owner in stored if owner is not None]
    adopted = uow.feedback.claim_orphans_many(
        sorted(
            {
                (event.provider, candidate, owner.id)
                for event, owner in owned
                if event.message_id
                for candidate in provider_id_candidates(event.message_id)
            },
            key=str,
        )
    )
    applications: list[tuple[Owner, DeliveryEvent]] = []
    for event, owner in owned:
        for orphan in adopted.pop(owner.id, []):
            applications.append((owner, orphan))
        applications.append((owner, event))
    adopted_count = len(applications) - len(owned)
    _apply_all(uow, applications)
    return FeedbackSummary(
        received=len(events),
        applied=len(owned),
        duplicates=len(events) - len(stored),
        orphans=orphans,
        adopted=adopted_count,
    )


def _locate_all(uow: UnitOfWork, events: Sequence[DeliveryEvent]) -> list[MessageState | None]:
    """Each event's message, if it is settled: one statement for the whole batch.

    By the provider's id for the message; else by the Message-ID we wrote
    (SES relaying our SMTP mail reports its own id, and the provider id is
    unknown until the worker commits). A message still queued belongs to
    the worker, which is about to write its own outcome unconditionally: the
    event waits as an orphan and is adopted by the next event about it.
    """
    candidates = [
        provider_id_candidates(event.message_id) if event.message_id else [] for event in events
    ]
    headers = [message_uuid_from_header(event.message_id_header) for event in events]
    by_provider_id, messages = uow.feedback.locate(
        sorted(
            {(e.provider, c) for e, found in zip(events, candidates, strict=True) for c in found}
        ),
        sorted({m for m in headers if m is not None}),
    )
    located: list[uuid.UUID | None] = []
    for event, found, header in zip(events, candidates, headers, strict=True):
        message_id = next(
            (
                by_provider_id[(event.provider, c)]
                for c in found
                if (event.provider, c) in by_provider_id
            ),
            None,
        )
        located.append(message_id or header)
    owners: list[MessageState | None] = []
    for message_id in located:
        message = messages.get(message_id) if message_id is not None else None
        owners.append(message if message is not None and _settled(message) else None)
    return owners


def _apply_all(uow: UnitOfWork, applications: Sequence[tuple[Owner, DeliveryEvent]]) -> None:
    """History, status, recipients and suppressions for every application, in order."""
    if not applications:
        return
    uow.messages.append_events(
        [
            (message.id, HISTORY_EVENT_FOR_FEEDBACK[event.event_type], _history_detail(event))
            for message, event in applications
        ]
    )
    # Statuses fold forward per message; the guarded UPDATE re-checks the
    # stored status, so a concurrent request that already moved a message
    # further cannot be undone by this one.
    statuses: dict[uuid.UUID, MessageStatus] = {}
    messages: dict[uuid.UUID, Owner] = {}
    for message, event in applications:
        messages[message.id] = message
        current = statuses.get(message.id, message.status)
        statuses[message.id] = status_after(current, event.event_type) or current
    targets = [
        (message_id, status, statuses_below(status))
        for message_id, status in statuses.items()
        if status is not messages[message_id].status
    ]
    uow.feedback.advance_statuses(targets)
    outcomes: dict[tuple[uuid.UUID, str], RecipientOutcome] = {}
    suppressions: dict[tuple[uuid.UUID | None, str, bool], Suppression] = {}
    for message, event in applications:
        address = event.recipient_address
        if address is None:
            continue
        status = RECIPIENT_STATUS_FOR_EVENT.get(event.event_type)
        if status is not None:
            key = (message.id, address)
            best = outcomes.get(key)
            # Forward only, the first of equal rank kept: what one upsert per event did.
            if best is None or RECIPIENT_RANK[status] > RECIPIENT_RANK[best.status or status]:
                outcomes[key] = RecipientOutcome(
                    address=address,
                    status=status,
                    kind="other",  # only used if the recipient had no row yet
                    reject_reason=event.reject_reason,
                    response=event.mta_response or event.description,
                )
        rule = suppression_for(event, message.client_id)
        if rule is not None:
            reason, client_id = rule
            entry = Suppression(
                address=address,
                reason=reason,
                # Test traffic's entries (issue 15) bind only the client whose
                # test caused them, and only its test mail: never live mail,
                # never another client's tests.
                client_id=message.client_id if message.is_test else client_id,
                source=f"{event.provider}:{event.event_id}"[:255],
                is_test=message.is_test,
            )
            # The last one wins, as one upsert per event had it.
            suppressions[(entry.client_id, entry.address, entry.is_test)] = entry
    uow.recipients.record_many([(key[0], outcomes[key]) for key in sorted(outcomes, key=str)])
    if suppressions:
        uow.suppressions.upsert_many([suppressions[key] for key in sorted(suppressions, key=str)])


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
        _apply_all(uow, [(message, orphan) for orphan in orphans])
        uow.commit()
    return len(orphans)


def _settled(message: Owner) -> bool:
    return message.status not in (MessageStatus.QUEUED, MessageStatus.SENDING)


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
