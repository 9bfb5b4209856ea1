"""The scheduler's pass (issue 18): fire due schedules, then enqueue due messages.

PostgreSQL is the source of truth. A pass locks what it works on with
``FOR UPDATE SKIP LOCKED``, so two schedulers running at once share the due
rows instead of both taking them; each row is marked in the transaction that
locked it. Messages go to the queue in bounded chunks, each with the SQS
delay that makes it arrive at its time, and a pass starts no chunk once its
time budget is spent: what is left is the next pass's. Time comes from a
``Clock`` the tests move.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from mailroom.adapters.db.batches import Batch
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.queue import MessageQueue, PlannerQueue, QueueEntry
from mailroom.domain.errors import MailroomError
from mailroom.domain.model import Client, ClientStatus, Message
from mailroom.domain.queues import band_of
from mailroom.domain.scheduling import (
    MAX_MISSED_LISTED,
    RunStatus,
    RunTrigger,
    Schedule,
    ScheduleRun,
    ScheduleState,
    plan_due,
    queue_delay_seconds,
)
from mailroom.services.scheduled_batches import release_due_batches

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SchedulerPolicy:
    lookahead_seconds: int = 90
    chunk_size: int = 1000
    time_budget_seconds: float = 45.0
    stale_seconds: int = 600
    schedules_per_pass: int = 200


@dataclass(slots=True)
class SchedulerReport:
    runs_started: int = 0
    runs_skipped: int = 0
    runs_failed: int = 0
    enqueued: int = 0
    refused: int = 0
    chunks: int = 0
    # Wall time of each message chunk: claim, enqueue, mark, commit.
    chunk_seconds: list[float] = field(default_factory=list)
    # The budget ran out with due work left: the next pass goes on.
    budget_exhausted: bool = False
    # Scheduled bulk batches handed to the planner (services/scheduled_batches.py).
    batches_released: int = 0


# Accepts a run's messages (services/sending.py through the entrypoint's
# wiring), or the bulk batch a batch payload makes (issue 18).
SendRun = Callable[[Schedule, Client, ScheduleRun], list[Message] | Batch]


def scheduler_pass(
    uow: UnitOfWork,
    queue: MessageQueue,
    send_run: SendRun,
    *,
    policy: SchedulerPolicy,
    clock: Clock,
    planner: PlannerQueue | None = None,
) -> SchedulerReport:
    report = SchedulerReport()
    deadline = time.monotonic() + policy.time_budget_seconds
    fire_due_schedules(uow, send_run, policy=policy, clock=clock, report=report)
    if planner is not None:
        # One row per batch, before the messages: a deep message backlog never delays them.
        batches = release_due_batches(
            uow,
            planner,
            now=clock.now(),
            lookahead_seconds=policy.lookahead_seconds,
            stale_seconds=policy.stale_seconds,
            chunk_size=policy.chunk_size,
            deadline=deadline,
        )
        report.batches_released = batches.released
        report.budget_exhausted = batches.budget_exhausted
    release_due_messages(uow, queue, policy=policy, clock=clock, report=report, deadline=deadline)
    return report


def release_due_messages(
    uow: UnitOfWork,
    queue: MessageQueue,
    *,
    policy: SchedulerPolicy,
    clock: Clock,
    report: SchedulerReport,
    deadline: float,
) -> None:
    """Enqueue every scheduled message due within the look-ahead, chunk by chunk."""
    while True:
        if time.monotonic() >= deadline:
            report.budget_exhausted = True
            return
        started = time.perf_counter()
        now = clock.now()
        with uow:
            due = uow.scheduled.claim_due(
                due_by=now + timedelta(seconds=policy.lookahead_seconds),
                stale_before=now - timedelta(seconds=policy.stale_seconds),
                limit=policy.chunk_size,
            )
            if not due:
                return
            refused = queue.enqueue_many(
                [
                    QueueEntry(
                        row.id,
                        row.trace_id,
                        queue_delay_seconds(row.scheduled_at, now),
                        # Issue 20: its queue's band, as the send path's,
                        # and its client's fair-queue group.
                        band_of(row.priority),
                        str(row.client_id) if row.client_id else None,
                    )
                    for row in due
                ]
            )
            uow.scheduled.mark_enqueued([row.id for row in due if row.id not in refused], now)
            uow.commit()
        report.chunks += 1
        report.enqueued += len(due) - len(refused)
        report.refused += len(refused)
        report.chunk_seconds.append(time.perf_counter() - started)
        if refused:
            # The queue is refusing: the rows stay unreleased for the next pass.
            log.warning("the send queue refused %d scheduled messages", len(refused))
            return
        if len(due) < policy.chunk_size:
            return


def fire_due_schedules(
    uow: UnitOfWork,
    send_run: SendRun,
    *,
    policy: SchedulerPolicy,
    clock: Clock,
    report: SchedulerReport,
) -> None:
    """Run each schedule whose time has come, once, under its misfire policy.

    The schedules are locked, their runs written and their next fire times
    moved in one transaction; a second scheduler skips them meanwhile and
    finds them not due afterwards. The runs' messages are accepted after.
    """
    now = clock.now()
    started: list[tuple[Schedule, ScheduleRun]] = []
    with uow:
        for schedule in uow.schedules.claim_due(now, policy.schedules_per_pass):
            plan = plan_due(schedule, now)
            if plan.skipped:
                # misfire_policy skip: one run says which fire times did not run.
                uow.schedules.add_run(
                    ScheduleRun(
                        id=uuid.uuid4(),
                        schedule_id=schedule.id,
                        fire_at=plan.skipped[-1],
                        trigger=RunTrigger.CATCH_UP,
                        status=RunStatus.SKIPPED,
                        started_at=now,
                        finished_at=now,
                        detail={
                            "reason": "misfire",
                            "message": (
                                "the scheduler reached these fire times more than "
                                f"{schedule.misfire_grace_seconds} s late and the misfire "
                                "policy is skip"
                            ),
                            "missed": _missed_detail(plan.skipped, plan.missed_more),
                        },
                    )
                )
                report.runs_skipped += 1
            if plan.fire_at is not None:
                detail: dict[str, object] = {}
                if plan.folded:
                    detail["missed"] = _missed_detail(plan.folded, plan.missed_more)
                run = ScheduleRun(
                    id=uuid.uuid4(),
                    schedule_id=schedule.id,
                    fire_at=plan.fire_at,
                    trigger=plan.trigger,
                    started_at=now,
                    detail=detail,
                )
                uow.schedules.add_run(run)
                started.append((schedule, run))
                schedule.last_run_at = plan.fire_at
            schedule.next_run_at = plan.next_run_at
            if schedule.next_run_at is None:
                schedule.state = ScheduleState.FINISHED
            uow.schedules.save(schedule)
        uow.commit()
    for schedule, run in started:
        execute_run(uow, send_run, schedule, run, clock=clock)
        if run.status is RunStatus.SENT:
            report.runs_started += 1
        elif run.status is RunStatus.SKIPPED:
            report.runs_skipped += 1
        else:
            report.runs_failed += 1


def execute_run(
    uow: UnitOfWork,
    send_run: SendRun,
    schedule: Schedule,
    run: ScheduleRun,
    *,
    clock: Clock,
) -> ScheduleRun:
    """Accept the run's messages and record how it went; the schedule goes on either way."""
    with uow:
        client = uow.clients.get(schedule.client_id)
    if client is None or client.status is ClientStatus.SUSPENDED:
        run.status = RunStatus.SKIPPED
        run.detail = {
            **run.detail,
            "reason": "client_suspended",
            "message": "the client is suspended: nothing was sent",
        }
    else:
        try:
            sent = send_run(schedule, client, run)
        except MailroomError as error:
            run.status = RunStatus.FAILED
            run.detail = {**run.detail, "code": error.code, "message": error.message}
        except Exception as error:
            log.exception("schedule %s run %s failed", schedule.id, run.id)
            run.status = RunStatus.FAILED
            run.detail = {**run.detail, "code": "internal_error", "message": repr(error)[:500]}
        else:
            run.status = RunStatus.SENT
            if isinstance(sent, Batch):
                run.batch_id = sent.id
            else:
                run.message_ids = [message.id for message in sent]
    run.finished_at = clock.now()
    with uow:
        uow.schedules.save_run(run)
        uow.commit()
    return run


def _missed_detail(missed: list[datetime], more: bool) -> dict[str, object]:
    return {
        "count": len(missed),
        "more_than": MAX_MISSED_LISTED if more else None,
        "first": missed[0].isoformat(),
        "last": missed[-1].isoformat(),
    }
