"""Scheduled messages and recurring schedules in PostgreSQL (issue 18).

PostgreSQL is the source of truth: a ``scheduled`` row with a due
``scheduled_at`` is what the scheduler sends, whichever route wrote it, and
``FOR UPDATE SKIP LOCKED`` lets any number of schedulers share the due rows
without two of them taking the same one.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from mailroom.adapters.db.array_literals import uuid_array
from mailroom.adapters.db.tables import MessageEventRow, MessageRow, ScheduleRow, ScheduleRunRow
from mailroom.domain.model import EventType, MessageStatus
from mailroom.domain.queues import DEFAULT_PRIORITY
from mailroom.domain.scheduling import (
    MisfirePolicy,
    RunStatus,
    RunTrigger,
    Schedule,
    ScheduleRun,
    ScheduleState,
)


@dataclass(frozen=True, slots=True)
class DueMessage:
    id: uuid.UUID
    trace_id: str
    scheduled_at: datetime
    # Its queue's priority (issue 20): the band the scheduler releases it onto.
    priority: int = DEFAULT_PRIORITY
    # Its client: the SQS fair-queue message group.
    client_id: uuid.UUID | None = None


class ChangeOutcome:
    """What a cancel or a reschedule found: done, no such message, or past scheduling."""

    DONE = "done"
    MISSING = "missing"
    NOT_SCHEDULED = "not_scheduled"


class ScheduledMessageRepository(abc.ABC):
    @abc.abstractmethod
    def claim_due(
        self, *, due_by: datetime, stale_before: datetime, limit: int
    ) -> list[DueMessage]:
        """Lock up to ``limit`` scheduled rows due by ``due_by`` that nobody has enqueued.

        Rows another transaction holds are skipped, not waited for. A row
        enqueued before ``stale_before`` whose time is also before it lost its
        queue record somewhere (it would have been sent): it is taken again.
        """

    @abc.abstractmethod
    def mark_enqueued(self, message_ids: Sequence[uuid.UUID], at: datetime) -> None: ...

    @abc.abstractmethod
    def cancel(self, client_id: uuid.UUID, message_id: uuid.UUID) -> str:
        """``scheduled`` → ``cancelled`` with its event; a ChangeOutcome value."""

    @abc.abstractmethod
    def reschedule(
        self, client_id: uuid.UUID, message_id: uuid.UUID, scheduled_at: datetime
    ) -> tuple[str, str | None]:
        """Move a ``scheduled`` message; (ChangeOutcome value, its trace id)."""

    @abc.abstractmethod
    def oldest_overdue(self, now: datetime) -> datetime | None:
        """The due time of the oldest message still ``scheduled`` after its time."""


# Two statements, each on its own partial index: the rows nobody released
# yet (the scheduler's work), and released rows still scheduled long after
# their time (their queue record was lost). One OR'ed query walked every
# already-released row of the minute on each chunk: 100,000 rows due at once
# made that quadratic.
_CLAIM_UNRELEASED = text(
    """
    SELECT id, trace_id, scheduled_at,
           -- Its queue's priority (issue 20): its named queue, else the
           -- client's default one (a NULL queue_id), else the default 5.
           coalesce((SELECT q.priority FROM queues q
                     WHERE q.id = messages.queue_id
                        OR (messages.queue_id IS NULL AND q.client_id = messages.client_id
                            AND q.name = 'default')), 5) AS priority,
           client_id
    FROM messages
    WHERE status = 'scheduled' AND enqueued_at IS NULL AND scheduled_at <= :due_by
    ORDER BY scheduled_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
_CLAIM_STALE = text(
    """
    SELECT id, trace_id, scheduled_at,
           -- Its queue's priority (issue 20): its named queue, else the
           -- client's default one (a NULL queue_id), else the default 5.
           coalesce((SELECT q.priority FROM queues q
                     WHERE q.id = messages.queue_id
                        OR (messages.queue_id IS NULL AND q.client_id = messages.client_id
                            AND q.name = 'default')), 5) AS priority,
           client_id
    FROM messages
    WHERE status = 'scheduled' AND scheduled_at < :stale_before AND enqueued_at < :stale_before
    ORDER BY scheduled_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

_MARK_ENQUEUED = text(
    """
    UPDATE messages SET enqueued_at = :at
    WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'scheduled'
    """
)


class SqlScheduledMessageRepository(ScheduledMessageRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def claim_due(
        self, *, due_by: datetime, stale_before: datetime, limit: int
    ) -> list[DueMessage]:
        rows = self._session.execute(_CLAIM_STALE, {"stale_before": stale_before, "limit": limit})
        due = [_due(row) for row in rows]
        if len(due) < limit:
            rows = self._session.execute(
                _CLAIM_UNRELEASED, {"due_by": due_by, "limit": limit - len(due)}
            )
            due.extend(_due(row) for row in rows)
        return due

    def mark_enqueued(self, message_ids: Sequence[uuid.UUID], at: datetime) -> None:
        if message_ids:
            self._session.execute(_MARK_ENQUEUED, {"ids": uuid_array(message_ids), "at": at})

    def cancel(self, client_id: uuid.UUID, message_id: uuid.UUID) -> str:
        changed = self._session.execute(
            update(MessageRow)
            .where(MessageRow.id == message_id)
            .where(MessageRow.client_id == client_id)
            .where(MessageRow.status == MessageStatus.SCHEDULED.value)
            .values(status=MessageStatus.CANCELLED.value, updated_at=func.now())
            .returning(MessageRow.scheduled_at)
        ).first()
        if changed is None:
            return self._why_unchanged(client_id, message_id)
        self._event(message_id, EventType.CANCELLED, {"scheduled_at": _iso(changed[0])})
        return ChangeOutcome.DONE

    def reschedule(
        self, client_id: uuid.UUID, message_id: uuid.UUID, scheduled_at: datetime
    ) -> tuple[str, str | None]:
        before = (
            select(MessageRow.scheduled_at).where(MessageRow.id == message_id).scalar_subquery()
        )
        changed = self._session.execute(
            update(MessageRow)
            .where(MessageRow.id == message_id)
            .where(MessageRow.client_id == client_id)
            .where(MessageRow.status == MessageStatus.SCHEDULED.value)
            # The queue record already out (if any) finds the row not due, or
            # not released, and is dropped; the scheduler enqueues it anew.
            .values(scheduled_at=scheduled_at, enqueued_at=None, updated_at=func.now())
            .returning(MessageRow.trace_id, before)
        ).first()
        if changed is None:
            return self._why_unchanged(client_id, message_id), None
        self._event(
            message_id,
            EventType.RESCHEDULED,
            {"from": _iso(changed[1]), "scheduled_at": _iso(scheduled_at)},
        )
        return ChangeOutcome.DONE, str(changed[0])

    def oldest_overdue(self, now: datetime) -> datetime | None:
        oldest: datetime | None = self._session.execute(
            select(func.min(MessageRow.scheduled_at))
            .where(MessageRow.status == MessageStatus.SCHEDULED.value)
            .where(MessageRow.scheduled_at < now)
        ).scalar()
        return oldest

    def _why_unchanged(self, client_id: uuid.UUID, message_id: uuid.UUID) -> str:
        found = self._session.execute(
            select(MessageRow.id)
            .where(MessageRow.id == message_id)
            .where(MessageRow.client_id == client_id)
        ).first()
        return ChangeOutcome.MISSING if found is None else ChangeOutcome.NOT_SCHEDULED

    def _event(self, message_id: uuid.UUID, event_type: EventType, detail: dict[str, Any]) -> None:
        self._session.execute(
            insert(MessageEventRow).values(
                message_id=message_id, type=event_type.value, detail=detail
            )
        )


class ScheduleRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, schedule: Schedule) -> None: ...

    @abc.abstractmethod
    def get(self, client_id: uuid.UUID, schedule_id: uuid.UUID) -> Schedule | None: ...

    @abc.abstractmethod
    def get_for_update(self, client_id: uuid.UUID, schedule_id: uuid.UUID) -> Schedule | None:
        """``get``, holding the row until commit (a scheduler pass skips it meanwhile)."""

    @abc.abstractmethod
    def page(self, client_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> list[Schedule]:
        """Newest first, after the schedule ``after`` (a cursor) if given."""

    @abc.abstractmethod
    def save(self, schedule: Schedule) -> None: ...

    @abc.abstractmethod
    def delete(self, client_id: uuid.UUID, schedule_id: uuid.UUID) -> bool: ...

    @abc.abstractmethod
    def claim_due(self, now: datetime, limit: int) -> list[Schedule]:
        """Lock up to ``limit`` active schedules whose ``next_run_at`` has come (SKIP LOCKED)."""

    @abc.abstractmethod
    def add_run(self, run: ScheduleRun) -> None: ...

    @abc.abstractmethod
    def save_run(self, run: ScheduleRun) -> None: ...

    @abc.abstractmethod
    def runs(
        self, schedule_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
    ) -> list[ScheduleRun]:
        """Newest first, after the run ``after`` (a cursor) if given."""


class SqlScheduleRepository(ScheduleRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, schedule: Schedule) -> None:
        self._session.execute(insert(ScheduleRow).values(**_schedule_values(schedule)))

    def get(self, client_id: uuid.UUID, schedule_id: uuid.UUID) -> Schedule | None:
        row = self._session.execute(
            select(ScheduleRow)
            .where(ScheduleRow.id == schedule_id)
            .where(ScheduleRow.client_id == client_id)
        ).scalar()
        return _schedule(row) if row is not None else None

    def get_for_update(self, client_id: uuid.UUID, schedule_id: uuid.UUID) -> Schedule | None:
        row = self._session.execute(
            select(ScheduleRow)
            .where(ScheduleRow.id == schedule_id)
            .where(ScheduleRow.client_id == client_id)
            .with_for_update()
        ).scalar()
        return _schedule(row) if row is not None else None

    def page(self, client_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> list[Schedule]:
        query = select(ScheduleRow).where(ScheduleRow.client_id == client_id)
        if after is not None:
            anchor = (
                select(ScheduleRow.created_at)
                .where(ScheduleRow.id == after)
                .where(ScheduleRow.client_id == client_id)
                .scalar_subquery()
            )
            query = query.where(
                or_(
                    ScheduleRow.created_at < anchor,
                    and_(ScheduleRow.created_at == anchor, ScheduleRow.id < after),
                )
            )
        rows = self._session.execute(
            query.order_by(ScheduleRow.created_at.desc(), ScheduleRow.id.desc()).limit(limit)
        ).scalars()
        return [_schedule(row) for row in rows]

    def save(self, schedule: Schedule) -> None:
        values = _schedule_values(schedule)
        del values["id"], values["client_id"], values["created_at"]
        self._session.execute(
            update(ScheduleRow)
            .where(ScheduleRow.id == schedule.id)
            .values(**values, updated_at=func.now())
        )

    def delete(self, client_id: uuid.UUID, schedule_id: uuid.UUID) -> bool:
        gone = self._session.execute(
            delete(ScheduleRow)
            .where(ScheduleRow.id == schedule_id)
            .where(ScheduleRow.client_id == client_id)
            .returning(ScheduleRow.id)
        ).first()
        return gone is not None

    def claim_due(self, now: datetime, limit: int) -> list[Schedule]:
        rows = self._session.execute(
            select(ScheduleRow)
            .where(ScheduleRow.state == ScheduleState.ACTIVE.value)
            .where(ScheduleRow.next_run_at <= now)
            .order_by(ScheduleRow.next_run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
        return [_schedule(row) for row in rows]

    def add_run(self, run: ScheduleRun) -> None:
        self._session.execute(insert(ScheduleRunRow).values(**_run_values(run)))

    def save_run(self, run: ScheduleRun) -> None:
        values = _run_values(run)
        del values["id"], values["schedule_id"]
        self._session.execute(
            update(ScheduleRunRow).where(ScheduleRunRow.id == run.id).values(**values)
        )

    def runs(
        self, schedule_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
    ) -> list[ScheduleRun]:
        query = select(ScheduleRunRow).where(ScheduleRunRow.schedule_id == schedule_id)
        if after is not None:
            anchor = (
                select(ScheduleRunRow.started_at)
                .where(ScheduleRunRow.id == after)
                .where(ScheduleRunRow.schedule_id == schedule_id)
                .scalar_subquery()
            )
            query = query.where(
                or_(
                    ScheduleRunRow.started_at < anchor,
                    and_(ScheduleRunRow.started_at == anchor, ScheduleRunRow.id < after),
                )
            )
        rows = self._session.execute(
            query.order_by(ScheduleRunRow.started_at.desc(), ScheduleRunRow.id.desc()).limit(limit)
        ).scalars()
        return [_run(row) for row in rows]


def _schedule_values(schedule: Schedule) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": schedule.id,
        "client_id": schedule.client_id,
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "send": schedule.send,
        "batch": schedule.batch,
        "state": schedule.state.value,
        "misfire_policy": schedule.misfire_policy.value,
        "misfire_grace_seconds": schedule.misfire_grace_seconds,
        "starts_at": schedule.starts_at,
        "ends_at": schedule.ends_at,
        "next_run_at": schedule.next_run_at,
        "last_run_at": schedule.last_run_at,
        "is_test": schedule.is_test,
        "created_at": schedule.created_at or func.now(),
    }
    return values


def _schedule(row: ScheduleRow) -> Schedule:
    return Schedule(
        id=row.id,
        client_id=row.client_id,
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        send=dict(row.send) if row.send is not None else None,
        batch=dict(row.batch) if row.batch is not None else None,
        state=ScheduleState(row.state),
        misfire_policy=MisfirePolicy(row.misfire_policy),
        misfire_grace_seconds=row.misfire_grace_seconds,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
        is_test=row.is_test,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _run_values(run: ScheduleRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "schedule_id": run.schedule_id,
        "fire_at": run.fire_at,
        "trigger": run.trigger.value,
        "status": run.status.value,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "message_ids": [str(message_id) for message_id in run.message_ids],
        "detail": run.detail,
        "batch_id": run.batch_id,
    }


def _run(row: ScheduleRunRow) -> ScheduleRun:
    return ScheduleRun(
        id=row.id,
        schedule_id=row.schedule_id,
        fire_at=row.fire_at,
        trigger=RunTrigger(row.trigger),
        status=RunStatus(row.status),
        started_at=row.started_at,
        finished_at=row.finished_at,
        message_ids=[uuid.UUID(value) for value in row.message_ids],
        detail=dict(row.detail),
        batch_id=row.batch_id,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _due(row: Any) -> DueMessage:
    return DueMessage(_uuid(row[0]), row[1], row[2], row[3], _uuid(row[4]))


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
