"""The reconciler: no message stays queued forever (issue 7).

Run on a schedule (template.yaml's ReconcilerFunction, and the local runner
on the same schedule). Each pass:

- re-enqueues messages ``queued`` or ``sending`` (with an expired lease) whose
  expected time has passed by ``stale_after``: the queue message was lost
  (a crash between the API's commit and its SQS send, a record dropped), or
  the worker holding the claim died. A re-enqueue of a message that is in
  fact still on the queue is harmless: the worker's claim lets one copy send;
- ends ``failed``, with the reason, those whose budget is spent (attempts, or
  claims that never produced an outcome: a message that kills its worker);
- applies provider events that arrived before their message was recorded sent
  (``feedback.adopt_orphans``), and deletes expired idempotency keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.queue import MessageQueue
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.services import feedback, queues

# The claim the reconciler takes to end a row: long enough for one statement.
_END_LEASE_SECONDS = 60


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    stale_after: timedelta
    max_attempts: int
    max_claims: int
    batch_size: int
    # How far back to look for newly sent messages with orphaned provider events.
    orphan_window: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    requeued: int = 0
    ended: int = 0
    enqueue_failures: int = 0
    orphans_adopted: int = 0
    keys_purged: int = 0


def reconcile(
    uow: UnitOfWork, queue: MessageQueue, policy: ReconcilePolicy, *, now: datetime
) -> ReconcileReport:
    older_than = now - policy.stale_after
    with uow:
        candidates = uow.messages.unfinished(older_than, policy.batch_size)
    stuck = [m for m in candidates if _expected_at(m) < older_than and not _live_claim(m, now)]
    exhausted = [m for m in stuck if _exhausted(m, policy)]
    late = [m for m in stuck if not _exhausted(m, policy)]

    ended = _end(uow, exhausted, policy)
    requeued, failures = _requeue(uow, queue, late, older_than)
    adopted = _adopt_orphans(uow, now - policy.orphan_window, policy.batch_size)
    with uow:
        purged = uow.idempotency.purge_expired(now, policy.batch_size)
        uow.commit()
    return ReconcileReport(
        requeued=requeued,
        ended=ended,
        enqueue_failures=failures,
        orphans_adopted=adopted,
        keys_purged=purged,
    )


def _expected_at(message: Message) -> datetime:
    """When the message should have been handled: its retry's due time, else its last change."""
    last_change = message.updated_at or message.created_at
    assert last_change is not None
    if message.next_attempt_at is not None and message.next_attempt_at > last_change:
        return message.next_attempt_at
    if message.lease_expires_at is not None and message.lease_expires_at > last_change:
        return message.lease_expires_at
    return last_change


def _live_claim(message: Message, now: datetime) -> bool:
    return (
        message.status is MessageStatus.SENDING
        and message.lease_expires_at is not None
        and message.lease_expires_at >= now
    )


def _exhausted(message: Message, policy: ReconcilePolicy) -> bool:
    return message.attempts >= policy.max_attempts or message.claims >= policy.max_claims


def _end(uow: UnitOfWork, messages: list[Message], policy: ReconcilePolicy) -> int:
    if not messages:
        return 0
    token = uuid.uuid4()
    with uow:
        # Claimed first, so a worker that takes one meanwhile wins and this skips it.
        claimed = uow.messages.claim([m.id for m in messages], token, _END_LEASE_SECONDS)
        for message in claimed:
            message.status = MessageStatus.FAILED
            message.next_attempt_at = None
            message.last_error = (
                f"retries_exhausted: {message.attempts} attempt(s), {message.claims - 1} "
                f"claim(s) without an outcome; last error: {message.last_error or 'none'}"
            )
        written = uow.messages.record_outcomes(token, claimed)
        uow.messages.append_events(
            [
                (
                    message.id,
                    EventType.FAILED,
                    {
                        "error": message.last_error,
                        "attempts": message.attempts,
                        "retries_exhausted": True,
                        "by": "reconciler",
                    },
                )
                for message in claimed
                if message.id in written
            ]
        )
        uow.commit()
    return len(written)


def _requeue(
    uow: UnitOfWork, queue: MessageQueue, messages: list[Message], older_than: datetime
) -> tuple[int, int]:
    if not messages:
        return 0, 0
    by_id = {m.id: m for m in messages}
    with uow:
        # Guarded: a row a worker claimed or finished since the read is skipped.
        # updated_at moves on, so the next pass waits stale_after again.
        changed = uow.messages.requeue_stale(list(by_id), older_than)
        uow.messages.append_events(
            [
                (
                    message_id,
                    EventType.REQUEUED,
                    {"from_status": by_id[message_id].status.value, "by": "reconciler"},
                )
                for message_id in changed
            ]
        )
        # Issue 20: back on its queue's band, in its client's fair-queue group.
        entries = queues.queue_entries(uow, changed)
        uow.commit()
    # A refused one still reads queued and its updated_at says when: the
    # next pass tries again.
    failures = len(queue.enqueue_many(entries))
    return len(changed) - failures, failures


def _adopt_orphans(uow: UnitOfWork, since: datetime, limit: int) -> int:
    with uow:
        if uow.feedback.count_orphans() == 0:
            return 0
        recent = uow.messages.sent_since(since, limit)
    return sum(feedback.adopt_orphans(uow, message_id) for message_id in recent)
