"""How far behind sending is: what GET /health reports beside its checks (issue 7)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.dead_letter_queue import DeadLetterQueue
from mailroom.domain.errors import MailroomError


@dataclass(frozen=True, slots=True)
class Backlog:
    # None when the queue or the database did not answer (the checks say why).
    dead_letter_depth: int | None
    oldest_queued_age_seconds: float | None
    # Issue 18: how far past its time the oldest still-scheduled message or
    # scheduled batch (not yet planning) is (0: none is overdue). A growing
    # figure means the scheduler (or, for a batch, the planner) is not running.
    oldest_overdue_scheduled_seconds: float | None = None


def measure(uow: UnitOfWork, dead_letters: DeadLetterQueue, *, now: datetime) -> Backlog:
    try:
        depth: int | None = dead_letters.approximate_count()
    except MailroomError:
        depth = None
    try:
        with uow:
            oldest = uow.messages.oldest_unfinished_at()
        age = round((now - oldest).total_seconds(), 1) if oldest is not None else 0.0
    except Exception:  # noqa: BLE001 - a detail must not break the health answer
        age = None
    try:
        with uow:
            overdue = min(
                (
                    moment
                    for moment in (
                        uow.scheduled.oldest_overdue(now),
                        uow.batches.oldest_overdue(now),
                    )
                    if moment is not None
                ),
                default=None,
            )
        late = round((now - overdue).total_seconds(), 1) if overdue is not None else 0.0
    except Exception:  # noqa: BLE001 - a detail must not break the health answer
        late = None
    return Backlog(
        dead_letter_depth=depth,
        oldest_queued_age_seconds=age,
        oldest_overdue_scheduled_seconds=late,
    )
