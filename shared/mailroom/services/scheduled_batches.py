"""Scheduled bulk batches (issue 18, item 1): the batch waits, the planner starts at its time.

A batch with ``scheduled_at`` is stored as it would be (its content checked,
its inline recipients kept, an upload frozen at start) and waits as one
``scheduled`` row. The scheduler hands it to the planner queue within the
look-ahead of its time, with the SQS delay left, and marks it released in
the transaction that locked it (``FOR UPDATE SKIP LOCKED``): two schedulers
never release one batch twice, and should a record be lost the batch is
released again once stale. The planner, which already resumes from its
cursor and never writes a recipient twice, moves it to ``planning`` when the
record arrives.

Why not plan the messages at once as ``scheduled`` rows for the message
scheduler to release: a 1,000,000-recipient upload would be a million rows
waiting for up to 30 days, a cancel would rewrite a million rows, the
suppression list would be read weeks before the send, and at its minute the
scheduler would have a million rows to release against a budget built for
100,000 a minute, ahead of every single scheduled send due then. Waiting as
one row costs the scheduler one row per batch; the fan-out happens at the
planner's own rate, as for any batch.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailroom.adapters.db.batches import Batch
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.queue import PlannerQueue
from mailroom.domain.batches import BatchStatus
from mailroom.domain.errors import BatchNotFound, DependencyUnavailable, NotScheduled
from mailroom.domain.scheduling import normalise_send_time, queue_delay_seconds

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchRelease:
    released: int = 0
    refused: int = 0
    budget_exhausted: bool = False


def release_batch_if_near(
    uow: UnitOfWork,
    planner: PlannerQueue,
    batch: Batch,
    *,
    now: datetime,
    lookahead_seconds: int,
) -> bool:
    """Hand a scheduled batch due within the look-ahead to the planner, delayed until its time.

    Best effort, as for a scheduled message: should the queue refuse, the
    batch stays unreleased and the scheduler's next pass releases it.
    """
    due = batch.scheduled_at
    if due is None or (due - now).total_seconds() > lookahead_seconds:
        return False
    try:
        planner.request_planning(
            batch.id, batch.trace_id, delay_seconds=queue_delay_seconds(due, now)
        )
        with uow:
            uow.batches.mark_released([batch.id], now)
            uow.commit()
    except Exception:
        log.exception("releasing scheduled batch %s failed; the scheduler will", batch.id)
        return False
    return True


def release_due_batches(
    uow: UnitOfWork,
    planner: PlannerQueue,
    *,
    now: datetime,
    lookahead_seconds: int,
    stale_seconds: int,
    chunk_size: int,
    deadline: float,
) -> BatchRelease:
    """Release every scheduled batch due within the look-ahead, a chunk per transaction."""
    result = BatchRelease()
    while True:
        if time.monotonic() >= deadline:
            result.budget_exhausted = True
            return result
        with uow:
            due = uow.batches.claim_due_scheduled(
                due_by=now + timedelta(seconds=lookahead_seconds),
                stale_before=now - timedelta(seconds=stale_seconds),
                limit=chunk_size,
            )
            if not due:
                return result
            released = []
            for batch in due:
                try:
                    planner.request_planning(
                        batch.id,
                        batch.trace_id,
                        delay_seconds=queue_delay_seconds(batch.scheduled_at, now),
                    )
                except DependencyUnavailable as error:
                    # Unreleased: the next pass tries again.
                    log.warning("the planner queue refused scheduled batch %s: %s", batch.id, error)
                    result.refused += 1
                    continue
                released.append(batch.id)
            uow.batches.mark_released(released, now)
            uow.commit()
        result.released += len(released)
        if result.refused or len(due) < chunk_size:
            return result


@dataclass(frozen=True, slots=True)
class RescheduledBatch:
    batch: Batch
    # The time asked for had passed: the batch is planned now.
    in_past: bool


def reschedule_batch(
    uow: UnitOfWork,
    planner: PlannerQueue,
    *,
    client_id: uuid.UUID,
    batch_id: uuid.UUID,
    scheduled_at: datetime,
    now: datetime,
    lookahead_seconds: int,
) -> RescheduledBatch:
    """Move a batch still ``scheduled`` to another time; 409 not_scheduled once planning began.

    The same rules as creating one: an offset, at most 30 days ahead, a time
    already past plans it now. Exactly once across the move: the row is
    locked as the planner and the scheduler lock it, so a batch the planner
    took first is 409 here; the move clears ``released_at``, so a planner
    record already sent for the old time is stale and the planner drops it
    when it comes early (plan_batch), while one that comes at or after a
    moved-earlier time finds the batch planning already. The new time is
    released as on creation: now if within the look-ahead, else by the
    scheduler.
    """
    moment = normalise_send_time(scheduled_at, now=now, field_name="scheduled_at")
    due = max(moment, now)
    with uow:
        batch = uow.batches.get_for_client(client_id, batch_id, for_update=True)
        if batch is None:
            raise BatchNotFound(
                "no such batch for this client", details=[{"batch_id": str(batch_id)}]
            )
        if batch.status is not BatchStatus.SCHEDULED:
            raise NotScheduled(
                f"batch {batch_id} is not scheduled (it is {batch.status.value}): planning "
                "has begun, or it was never scheduled, cancelled or is awaiting its upload"
            )
        uow.batches.reschedule(batch_id, due)
        uow.commit()
    batch.scheduled_at = due
    batch.released_at = None
    release_batch_if_near(uow, planner, batch, now=now, lookahead_seconds=lookahead_seconds)
    with uow:
        moved = uow.batches.get_for_client(client_id, batch_id)
    return RescheduledBatch(moved or batch, in_past=moment <= now)
