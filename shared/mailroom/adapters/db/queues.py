"""Per-client queues in PostgreSQL (issue 20), and the message rows they hold.

A message whose ``queue_id`` is NULL belongs to its client's ``default``
queue: rows from before queues existed, and sends that name no queue, need
no extra write that way.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailroom.adapters.db.array_literals import uuid_array
from mailroom.adapters.db.tables import MessageRow, QueueRow
from mailroom.domain.errors import QueueNameTaken
from mailroom.domain.model import MessageStatus
from mailroom.domain.queues import DEFAULT_QUEUE_NAME, Queue, QueueState
from mailroom.domain.tracking import tracking_default

UNSENT = (MessageStatus.QUEUED.value, MessageStatus.SENDING.value, MessageStatus.HELD.value)


@dataclass(frozen=True, slots=True)
class ClaimView:
    """What the claim gate needs of one queued message: its client, queue and limits."""

    message_id: uuid.UUID
    client_id: uuid.UUID
    queue_key: str  # the queue's id, or "default:<client id>" before it exists
    state: QueueState
    priority: int
    rate_limit_per_minute: int | None
    trace_id: str
    max_retries: int | None = None
    retry_delays: tuple[int, ...] | None = None
    # The client's messages under a live claim (counted only when asked).
    in_flight: int = 0
    # Issue 21: the client's reputation state (None: never judged).
    reputation_state: str | None = None
    # The queue's own provider order; None: the client's.
    provider_order: list[str] | None = None
    # The queue's row id; None: the client's default queue, not made yet.
    queue_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """A held row the release puts back on SQS."""

    id: uuid.UUID
    trace_id: str
    client_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class MessageRoute:
    """Where a message's queue record goes: its queue's priority, and its client."""

    message_id: uuid.UUID
    client_id: uuid.UUID
    trace_id: str
    status: MessageStatus
    priority: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: dict[str, int]
    oldest_unsent_at: datetime | None
    sent_last_hour: int
    sent_last_day: int
    failed_last_hour: int
    failed_last_day: int
    sent_last_minute: int


def _queue(row: QueueRow) -> Queue:
    return Queue(
        id=row.id,
        client_id=row.client_id,
        name=row.name,
        priority=row.priority,
        rate_limit_per_minute=row.rate_limit_per_minute,
        max_retries=row.max_retries,
        retry_delays=None if row.retry_delays is None else list(row.retry_delays),
        bulk=row.bulk,
        state=QueueState(row.state),
        smtp_config_id=row.smtp_config_id,
        provider_order=row.provider_order,
        tracking=tracking_default(row.tracking, f"queue {row.name}"),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _values(queue: Queue) -> dict[str, Any]:
    return {
        "name": queue.name,
        "priority": queue.priority,
        "rate_limit_per_minute": queue.rate_limit_per_minute,
        "max_retries": queue.max_retries,
        "retry_delays": None if queue.retry_delays is None else list(queue.retry_delays),
        "bulk": queue.bulk,
        "state": queue.state.value,
        "smtp_config_id": queue.smtp_config_id,
        "provider_order": queue.provider_order,
        "tracking": None if queue.tracking is None else dict(queue.tracking),
    }


def _members(queue: Queue) -> ColumnElement[bool]:
    """The message rows ``queue`` holds (the default queue: its own and the NULL ones)."""
    if queue.name == DEFAULT_QUEUE_NAME:
        return and_(
            MessageRow.client_id == queue.client_id,
            or_(MessageRow.queue_id == queue.id, MessageRow.queue_id.is_(None)),
        )
    return MessageRow.queue_id == queue.id


# Queues not paused, with no release mark, that hold mail: a held row that
# committed after a resume's release looked (see mark_stranded_held).
_MARK_STRANDED_HELD = text(
    """
    UPDATE queues AS q SET release_requested_at = now()
    WHERE q.state <> 'paused' AND q.release_requested_at IS NULL
      AND (EXISTS (SELECT 1 FROM messages AS m
                   WHERE m.queue_id = q.id AND m.status = 'held')
           OR (q.name = 'default'
               AND EXISTS (SELECT 1 FROM messages AS m
                           WHERE m.client_id = q.client_id AND m.queue_id IS NULL
                             AND m.status = 'held')))
    RETURNING q.id
    """
)

# The gate's view of a batch: each queued message with its queue (the
# default one for a NULL queue_id, if the client has one yet).
# With :count_in_flight, each client's messages under a live claim ride along
# (the partial index ix_messages_sending_client keeps that count small).
_CLAIM_VIEW = text(
    """
    WITH batch AS (
        SELECT m.id, m.client_id, m.trace_id, q.id AS queue_id, q.state, q.priority,
               q.rate_limit_per_minute, q.max_retries, q.retry_delays, q.provider_order
        FROM messages m
        LEFT JOIN queues q
          ON q.id = m.queue_id
          OR (m.queue_id IS NULL AND q.client_id = m.client_id AND q.name = 'default')
        WHERE m.id = ANY(CAST(:ids AS uuid[])) AND m.status = 'queued'
    ), flying AS (
        SELECT s.client_id, count(*) AS n
        FROM messages s
        WHERE CAST(:count_in_flight AS boolean)
          AND s.status = 'sending' AND s.lease_expires_at > now()
          AND s.client_id IN (SELECT client_id FROM batch)
        GROUP BY s.client_id
    )
    SELECT batch.*, coalesce(flying.n, 0) AS in_flight, rs.state AS reputation_state
    FROM batch LEFT JOIN flying ON flying.client_id = batch.client_id
    LEFT JOIN reputation_states rs
      ON rs.client_id = batch.client_id AND rs.sending_domain = ''
    """
)

# Each message's queue priority: its assigned queue's, else its client's
# default queue's (a NULL queue_id), else the default 5 (no default queue
# yet). Two joins rather than the claim view's OR: each is an index lookup.
_ROUTES = text(
    """
    SELECT m.id, m.client_id, m.trace_id, m.status,
           coalesce(q.priority, d.priority, 5) AS priority
    FROM messages m
    LEFT JOIN queues q ON q.id = m.queue_id
    LEFT JOIN queues d
      ON m.queue_id IS NULL AND d.client_id = m.client_id AND d.name = 'default'
    WHERE m.id = ANY(CAST(:ids AS uuid[]))
    """
)

# Only rows still queued whose queue is paused right now: a resume racing
# the gate either sees them held (and releases them) or never sees them.
_HOLD = text(
    """
    WITH held AS (
        UPDATE messages m SET status = 'held', updated_at = now()
        FROM queues q
        WHERE m.id = ANY(CAST(:ids AS uuid[])) AND m.status = 'queued'
          AND q.state = 'paused'
          AND (q.id = m.queue_id
               OR (m.queue_id IS NULL AND q.client_id = m.client_id AND q.name = 'default'))
        RETURNING m.id
    ), event AS (
        INSERT INTO message_events (message_id, type, detail)
        SELECT id, 'held', '{"reason": "queue paused"}'::jsonb FROM held
    )
    SELECT id FROM held
    """
)


# A page of a queue's held rows, oldest first (the paged release). The queue
# must not be paused right now; SKIP LOCKED lets two releasers share a queue.
_HELD_PAGE = text(
    """
    SELECT m.id, m.trace_id, m.client_id
    FROM messages m
    WHERE m.queue_id = :queue_id AND m.status = 'held'
      AND EXISTS (SELECT 1 FROM queues q WHERE q.id = :queue_id AND q.state <> 'paused')
    ORDER BY m.created_at, m.id
    LIMIT :limit
    FOR UPDATE OF m SKIP LOCKED
    """
)
# The default queue's: its own rows and the client's NULL ones (on
# ix_messages_held_client, not the client's whole history).
_HELD_PAGE_DEFAULT = text(
    """
    SELECT m.id, m.trace_id, m.client_id
    FROM messages m
    WHERE m.client_id = :client_id AND m.status = 'held'
      AND (m.queue_id = :queue_id OR m.queue_id IS NULL)
      AND EXISTS (SELECT 1 FROM queues q WHERE q.id = :queue_id AND q.state <> 'paused')
    ORDER BY m.created_at, m.id
    LIMIT :limit
    FOR UPDATE OF m SKIP LOCKED
    """
)
_RELEASE = text(
    """
    WITH released AS (
        UPDATE messages SET status = 'queued', updated_at = now()
        WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'held'
        RETURNING id
    )
    INSERT INTO message_events (message_id, type, detail)
    SELECT id, 'released', CAST(:detail AS jsonb) FROM released
    """
)


# A deferred row's due time (issue 20): the reconciler's _expected_at reads
# next_attempt_at, so a message waiting for a send rate is not taken for lost.
_DEFER = text(
    """
    UPDATE messages m SET next_attempt_at = now() + make_interval(secs => d.seconds)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:seconds AS int[])) AS d(id, seconds)
    WHERE m.id = d.id AND m.status = 'queued'
    """
)


class SqlQueueRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, queue: Queue) -> None:
        try:
            with self._session.begin_nested():
                self._session.execute(
                    insert(QueueRow).values(
                        id=queue.id, client_id=queue.client_id, **_values(queue)
                    )
                )
        except IntegrityError:
            raise QueueNameTaken(
                f"this client has a queue named {queue.name!r} already",
                details=[{"field": "name", "message": "taken"}],
            ) from None

    def get(self, client_id: uuid.UUID, queue_id: uuid.UUID) -> Queue | None:
        row = self._session.execute(
            select(QueueRow).where(QueueRow.id == queue_id, QueueRow.client_id == client_id)
        ).scalar_one_or_none()
        return None if row is None else _queue(row)

    def named(self, client_id: uuid.UUID, name: str) -> Queue | None:
        row = self._session.execute(
            select(QueueRow).where(QueueRow.client_id == client_id, QueueRow.name == name)
        ).scalar_one_or_none()
        return None if row is None else _queue(row)

    def default_of(self, client_id: uuid.UUID) -> Queue:
        """The client's default queue, made now if it has none (two callers: one row)."""
        found = self.named(client_id, DEFAULT_QUEUE_NAME)
        if found is not None:
            return found
        self._session.execute(
            insert(QueueRow)
            .values(id=uuid.uuid4(), client_id=client_id, name=DEFAULT_QUEUE_NAME)
            .on_conflict_do_nothing()
        )
        made = self.named(client_id, DEFAULT_QUEUE_NAME)
        assert made is not None
        return made

    def share_locked(self, client_id: uuid.UUID, queue_id: uuid.UUID | None) -> Queue:
        """The queue (the client's default one for None or a deleted one), read FOR SHARE.

        The batch planner's chunk reads its queue's state this way: a pause,
        resume or drain (an UPDATE of the row) waits for the chunk's commit,
        so held rows a resume must release are committed before it looks.
        """
        # One statement per chunk in the common case (the queue exists).
        if queue_id is not None:
            found = self._share_locked(client_id, QueueRow.id == queue_id)
            if found is not None:
                return found
        # No named queue, or it was deleted since: the client's default one.
        found = self._share_locked(client_id, QueueRow.name == DEFAULT_QUEUE_NAME)
        if found is None:
            self.default_of(client_id)  # made on first use
            found = self._share_locked(client_id, QueueRow.name == DEFAULT_QUEUE_NAME)
        assert found is not None
        return found

    def _share_locked(self, client_id: uuid.UUID, which: ColumnElement[bool]) -> Queue | None:
        row = self._session.execute(
            select(QueueRow)
            .where(which, QueueRow.client_id == client_id)
            .with_for_update(read=True)
        ).scalar_one_or_none()
        return None if row is None else _queue(row)

    def page(self, client_id: uuid.UUID, after: str | None, limit: int) -> list[Queue]:
        query = select(QueueRow).where(QueueRow.client_id == client_id)
        if after is not None:
            query = query.where(QueueRow.name > after)
        rows = self._session.execute(query.order_by(QueueRow.name).limit(limit)).scalars()
        return [_queue(row) for row in rows]

    def save(self, queue: Queue) -> Queue:
        try:
            with self._session.begin_nested():
                row = self._session.execute(
                    update(QueueRow)
                    .where(QueueRow.id == queue.id, QueueRow.client_id == queue.client_id)
                    .values(**_values(queue), updated_at=func.now())
                    .returning(QueueRow)
                ).scalar_one()
        except IntegrityError:
            raise QueueNameTaken(
                f"this client has a queue named {queue.name!r} already",
                details=[{"field": "name", "message": "taken"}],
            ) from None
        return _queue(row)

    def remove(self, queue: Queue) -> None:
        self._session.execute(delete(QueueRow).where(QueueRow.id == queue.id))

    def unsent(self, queue: Queue) -> int:
        count: int = self._session.execute(
            select(func.count())
            .select_from(MessageRow)
            .where(_members(queue), MessageRow.status.in_(UNSENT))
        ).scalar_one()
        return count

    def assign(self, message_id: uuid.UUID, queue_id: uuid.UUID) -> None:
        self._session.execute(
            update(MessageRow).where(MessageRow.id == message_id).values(queue_id=queue_id)
        )

    def assign_many(self, message_ids: Sequence[uuid.UUID], queue_id: uuid.UUID) -> None:
        if message_ids:
            self._session.execute(
                update(MessageRow)
                .where(MessageRow.id.in_(list(message_ids)))
                .values(queue_id=queue_id)
            )

    def request_release(self, queue_id: uuid.UUID) -> None:
        """Mark the queue as having held mail to release (the scheduler's pass does)."""
        self._session.execute(
            update(QueueRow)
            .where(QueueRow.id == queue_id)
            .values(release_requested_at=func.coalesce(QueueRow.release_requested_at, func.now()))
        )

    def mark_stranded_held(self) -> int:
        """Mark queues not paused that hold mail yet have no release mark; how many.

        The safety net under every path that writes ``held`` after reading
        its queue paused (a send, the worker's claim, the planner): should
        that row commit only after a resume's release has looked and cleared
        the mark, nothing else would ever release it. One probe per queue,
        through the indexes the release itself uses.
        """
        rows = self._session.execute(_MARK_STRANDED_HELD).all()
        return len(rows)

    def releasing(self, limit: int) -> list[Queue]:
        """Queues not paused with held mail left to release, longest waiting first."""
        rows = self._session.execute(
            select(QueueRow)
            .where(
                QueueRow.release_requested_at.is_not(None),
                QueueRow.state != QueueState.PAUSED.value,
            )
            .order_by(QueueRow.release_requested_at)
            .limit(limit)
        ).scalars()
        return [_queue(row) for row in rows]

    def lock_held_page(self, queue: Queue, limit: int) -> list[HeldMessage]:
        """Up to ``limit`` of the queue's held rows, oldest first, locked; none while paused.

        ``SKIP LOCKED``: two releasers take different pages. The locks hold
        until the caller's transaction ends, so a worker's claim of a row
        whose record is already on SQS waits for the release to commit.
        """
        statement = _HELD_PAGE_DEFAULT if queue.name == DEFAULT_QUEUE_NAME else _HELD_PAGE
        rows = self._session.execute(
            statement, {"queue_id": queue.id, "client_id": queue.client_id, "limit": limit}
        ).all()
        return [HeldMessage(row.id, row.trace_id, row.client_id) for row in rows]

    def mark_released(self, queue: Queue, message_ids: Sequence[uuid.UUID]) -> None:
        """Held rows back to ``queued``, each with its ``released`` event."""
        if message_ids:
            self._session.execute(
                _RELEASE,
                {"ids": uuid_array(message_ids), "detail": json.dumps({"queue": queue.name})},
            )

    def release_done(self, queue: Queue) -> bool:
        """Clear the queue's release mark unless held rows remain; whether it was cleared.

        The check and the clear are one statement: a row held (and the queue
        resumed, marking it again) meanwhile keeps the mark.
        """
        held = (
            select(MessageRow.id)
            .where(_members(queue), MessageRow.status == MessageStatus.HELD.value)
            .exists()
        )
        cleared = self._session.execute(
            update(QueueRow)
            .where(QueueRow.id == queue.id, ~held)
            .values(release_requested_at=None)
            .returning(QueueRow.id)
        ).first()
        return cleared is not None

    def claim_view(
        self, message_ids: Sequence[uuid.UUID], *, count_in_flight: bool = False
    ) -> list[ClaimView]:
        if not message_ids:
            return []
        rows = self._session.execute(
            _CLAIM_VIEW, {"ids": uuid_array(message_ids), "count_in_flight": count_in_flight}
        ).all()
        return [
            ClaimView(
                message_id=row.id,
                client_id=row.client_id,
                queue_key=str(row.queue_id) if row.queue_id else f"default:{row.client_id}",
                state=QueueState(row.state) if row.state else QueueState.ACTIVE,
                priority=row.priority or 5,
                rate_limit_per_minute=row.rate_limit_per_minute,
                trace_id=row.trace_id,
                max_retries=row.max_retries,
                retry_delays=None if row.retry_delays is None else tuple(row.retry_delays),
                in_flight=int(row.in_flight),
                reputation_state=row.reputation_state,
                provider_order=row.provider_order,
                queue_id=row.queue_id,
            )
            for row in rows
        ]

    def routes(self, message_ids: Sequence[uuid.UUID]) -> list[MessageRoute]:
        """Each existing message's client, trace, status and queue priority (one statement)."""
        if not message_ids:
            return []
        rows = self._session.execute(_ROUTES, {"ids": uuid_array(message_ids)}).all()
        return [
            MessageRoute(
                row.id, row.client_id, row.trace_id, MessageStatus(row.status), row.priority
            )
            for row in rows
        ]

    def hold_paused(self, message_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not message_ids:
            return set()
        rows = self._session.execute(_HOLD, {"ids": uuid_array(message_ids)}).scalars()
        return set(rows)

    def mark_deferred(self, delays: dict[uuid.UUID, int]) -> None:
        """Record when deferred rows are due again, so the reconciler waits for that."""
        if not delays:
            return
        self._session.execute(
            _DEFER,
            {
                "ids": uuid_array(list(delays)),
                "seconds": "{" + ",".join(str(int(s)) for s in delays.values()) + "}",
            },
        )

    def stats(self, queue: Queue, now: datetime | None = None) -> QueueStats:
        now = now or datetime.now(UTC)
        depth_rows = self._session.execute(
            select(MessageRow.status, func.count())
            .where(_members(queue), MessageRow.status.in_(UNSENT))
            .group_by(MessageRow.status)
        ).all()
        oldest = self._session.execute(
            select(func.min(MessageRow.created_at)).where(
                _members(queue), MessageRow.status.in_(UNSENT)
            )
        ).scalar()
        hour, day, minute = (
            now - timedelta(hours=1),
            now - timedelta(days=1),
            now - timedelta(minutes=1),
        )
        sent = MessageRow.sent_at
        failed = and_(MessageRow.status == MessageStatus.FAILED.value)
        counts = self._session.execute(
            select(
                func.count().filter(sent >= hour),
                func.count().filter(sent >= day),
                func.count().filter(failed, MessageRow.updated_at >= hour),
                func.count().filter(failed, MessageRow.updated_at >= day),
                func.count().filter(sent >= minute),
            ).where(
                _members(queue),
                or_(sent >= day, and_(failed, MessageRow.updated_at >= day)),
            )
        ).one()
        return QueueStats(
            depth={str(status): int(count) for status, count in depth_rows},
            oldest_unsent_at=oldest,
            sent_last_hour=int(counts[0]),
            sent_last_day=int(counts[1]),
            failed_last_hour=int(counts[2]),
            failed_last_day=int(counts[3]),
            sent_last_minute=int(counts[4]),
        )
