"""Scheduling's values and rules (issue 18): send times, cron, misfires. No I/O.

Cron is cronsim's (pinned in layers/dependencies/requirements.txt): it
follows Debian cron's daylight-saving rules, which are the ones users know.
A fixed-time job whose local time falls in the spring-forward gap runs right
after the jump; one whose time occurs twice in the fall-back hour runs once.
Everything else here goes through ``next_fire``, so the library is one
function away from being replaced.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from mailroom.domain.errors import InvalidRequest

# Resend's limit, and the issue's: further ahead is a mistake more often than a plan.
MAX_SCHEDULE_AHEAD = timedelta(days=30)
# SQS refuses a longer per-message delay.
MAX_QUEUE_DELAY_SECONDS = 900
# A cron expression that does not fire within this long is refused: it never
# fires (``0 0 30 2 *``), or so rarely that it is surely a typo.
CRON_HORIZON = timedelta(days=366 * 5)
MAX_SCHEDULE_NAME = 200


class ScheduleState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    # ``ends_at`` has passed: nothing fires again.
    FINISHED = "finished"


class MisfirePolicy(StrEnum):
    """What a run that is later than its grace period does (the scheduler was down)."""

    # One catch-up run now, for however many fire times were missed.
    SEND = "send"
    # Nothing is sent; the missed fire times are recorded as a skipped run.
    SKIP = "skip"


class RunStatus(StrEnum):
    # Written before the run's messages are accepted; a crash leaves it visible.
    STARTED = "started"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class RunTrigger(StrEnum):
    CRON = "cron"
    CATCH_UP = "catch_up"
    RUN_NOW = "run_now"


def normalise_send_time(value: datetime, *, now: datetime, field_name: str) -> datetime:
    """``value`` in UTC, if it has an offset and is at most 30 days ahead (422 otherwise)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRequest(
            f"{field_name} needs a time zone offset (e.g. 2026-12-24T09:00:00+01:00 or ...Z)",
            details=[{"field": field_name, "type": "naive_datetime"}],
        )
    moment = value.astimezone(UTC)
    if moment - now > MAX_SCHEDULE_AHEAD:
        raise InvalidRequest(
            f"{field_name} is at most 30 days ahead",
            details=[{"field": field_name, "type": "too_far_ahead"}],
        )
    return moment


def queue_delay_seconds(due: datetime, now: datetime) -> int:
    """Whole seconds to hold a record back so it arrives at ``due``, to within half a second.

    Rounded, not rounded up: rounding up made every message up to a second
    late (half a second on average). A record that arrives before its time
    is still taken (the worker's claim allows 2 s, batch_statements.py).
    """
    left = (due - now).total_seconds()
    return max(0, min(MAX_QUEUE_DELAY_SECONDS, math.floor(left + 0.5)))


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; 422 for anything else (a path, a folder, a file of tzdata)."""
    try:
        if name not in _zone_names():
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InvalidRequest(
            f"timezone: {name!r} is not an IANA time zone (e.g. Europe/Berlin)",
            details=[{"field": "timezone", "type": "unknown_timezone"}],
        ) from error


def next_fire(expression: str, tz: str, after: datetime) -> datetime | None:
    """The first time after ``after`` that ``expression`` fires in ``tz``, in UTC.

    None if it does not fire within CRON_HORIZON. The one place cronsim is called.
    """
    local = after.astimezone(zone(tz))
    try:
        moment = next(iter(CronSim(expression, local)))
    except (StopIteration, OverflowError):
        # Nothing before the end of the calendar (year 9999).
        return None
    if moment - local > CRON_HORIZON:
        return None
    return moment.astimezone(UTC)


def check_cron(expression: str, tz: str, *, now: datetime) -> None:
    """Five standard fields that fire at some point (422 otherwise)."""
    fields = expression.split()
    if len(fields) != 5 or expression.startswith("@"):
        raise InvalidRequest(
            "cron: five fields, minute hour day-of-month month day-of-week (e.g. 0 9 * * 1-5)",
            details=[{"field": "cron", "type": "invalid_cron"}],
        )
    try:
        fires = next_fire(expression, tz, now)
    except CronSimError as error:
        raise InvalidRequest(
            f"cron: {error}", details=[{"field": "cron", "type": "invalid_cron"}]
        ) from error
    if fires is None:
        raise InvalidRequest(
            "cron: the expression never fires",
            details=[{"field": "cron", "type": "cron_never_fires"}],
        )


@dataclass(slots=True)
class Schedule:
    id: uuid.UUID
    client_id: uuid.UUID
    name: str
    cron: str
    timezone: str
    # A /v1/send body, validated when it was stored (domain.commands.SendRequest);
    # None when the schedule sends a batch instead.
    send: dict[str, Any] | None
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int
    state: ScheduleState = ScheduleState.ACTIVE
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    # The next fire time in UTC; None when it never fires again.
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    # Created with a test key: its runs send test messages (issue 15).
    is_test: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # A /v1/batches body (one content, inline recipients), validated when it
    # was stored: each run creates a bulk batch. Exactly one of send and batch.
    batch: dict[str, Any] | None = None

    def first_fire_after(self, moment: datetime) -> datetime | None:
        """The next fire time after ``moment`` within starts_at and ends_at."""
        if self.starts_at is not None and moment < self.starts_at:
            # A fire at exactly starts_at counts.
            moment = self.starts_at - timedelta(microseconds=1)
        fires = next_fire(self.cron, self.timezone, moment)
        if fires is None or (self.ends_at is not None and fires > self.ends_at):
            return None
        return fires


@dataclass(slots=True)
class ScheduleRun:
    id: uuid.UUID
    schedule_id: uuid.UUID
    # The fire time the run stands for (run now: when it was asked).
    fire_at: datetime
    trigger: RunTrigger
    status: RunStatus = RunStatus.STARTED
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message_ids: list[uuid.UUID] = field(default_factory=list)
    # Why it failed or was skipped, and how many fire times it covers.
    detail: dict[str, Any] = field(default_factory=dict)
    # A batch payload's run: the bulk batch it created.
    batch_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class DuePlan:
    """What one scheduler pass does with a schedule whose ``next_run_at`` has come."""

    # The fire time to run now, if any, and why.
    fire_at: datetime | None
    trigger: RunTrigger
    # Older fire times this run stands for (misfire_policy send): one run, not many.
    folded: list[datetime]
    # Fire times that do not run (misfire_policy skip): recorded as one skipped run.
    skipped: list[datetime]
    next_run_at: datetime | None
    # More fire times were missed than are listed (MAX_MISSED_LISTED).
    missed_more: bool = False


MAX_MISSED_LISTED = 100


def plan_due(schedule: Schedule, now: datetime) -> DuePlan:
    """Which of the fire times since ``next_run_at`` run, under the misfire policy.

    The newest due fire time runs if it is within the grace period (on time).
    Older ones, and the newest too once it is beyond the grace period (the
    scheduler was down), are misfires: ``send`` folds them all into one run
    (a catch-up when the newest is late), ``skip`` records them as skipped.
    Either way the schedule moves to its first fire time after ``now``, so
    an outage never turns into a burst of runs.
    """
    assert schedule.next_run_at is not None
    due: list[datetime] = []
    moment: datetime | None = schedule.next_run_at
    more = False
    while moment is not None and moment <= now:
        if len(due) >= MAX_MISSED_LISTED:
            more = True
            # Bounded: an every-minute schedule down for a month is not walked.
            moment = schedule.first_fire_after(now)
            break
        due.append(moment)
        moment = schedule.first_fire_after(moment)
    next_run_at = moment
    newest, older = due[-1], due[:-1]
    on_time = now - newest <= timedelta(seconds=schedule.misfire_grace_seconds) and not more
    send = schedule.misfire_policy is MisfirePolicy.SEND
    if on_time:
        return DuePlan(
            newest,
            RunTrigger.CRON,
            older if send else [],
            [] if send else older,
            next_run_at,
            more,
        )
    if send:
        return DuePlan(newest, RunTrigger.CATCH_UP, older, [], next_run_at, more)
    return DuePlan(None, RunTrigger.CATCH_UP, [], due, next_run_at, more)
