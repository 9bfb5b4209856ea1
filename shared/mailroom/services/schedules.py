"""Scheduled messages and recurring schedules, as the API changes them (issue 18)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailroom.adapters.db.batches import BatchSummary
from mailroom.adapters.db.scheduling import ChangeOutcome
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.queue import MessageQueue
from mailroom.domain.batches import BatchRequest
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import (
    InvalidRequest,
    MessageNotFound,
    NotScheduled,
    ScheduleFinished,
    ScheduleNotFound,
    SchedulePaused,
)
from mailroom.domain.model import Client, Message
from mailroom.domain.queues import Band
from mailroom.domain.scheduling import (
    MisfirePolicy,
    RunTrigger,
    Schedule,
    ScheduleRun,
    ScheduleState,
    check_cron,
    normalise_send_time,
    zone,
)
from mailroom.services import queues, sending
from mailroom.services.scheduler import Clock, SendRun, execute_run

MAX_PAGE = 100


# --- one scheduled message ---------------------------------------------------


def cancel_message(uow: UnitOfWork, *, client_id: uuid.UUID, message_id: str) -> None:
    """``scheduled`` → ``cancelled``; 409 not_scheduled once sending has begun.

    The worker claims a scheduled row with a conditional UPDATE of the same
    row: whichever commits first wins, so a cancel that answers 200 has
    stopped the send, and one that lost answers 409.
    """
    parsed = _message_id(message_id)
    with uow:
        outcome = uow.scheduled.cancel(client_id, parsed)
        uow.commit()
    _raise_unless_done(outcome, message_id)


@dataclass(frozen=True, slots=True)
class Rescheduled:
    scheduled_at: datetime
    # The time asked for had passed: the message is due now.
    in_past: bool


def reschedule_message(
    uow: UnitOfWork,
    queue: MessageQueue,
    *,
    client_id: uuid.UUID,
    message_id: str,
    scheduled_at: datetime,
    now: datetime,
    lookahead_seconds: int,
) -> Rescheduled:
    parsed = _message_id(message_id)
    moment = normalise_send_time(scheduled_at, now=now, field_name="scheduled_at")
    due = max(moment, now)
    with uow:
        outcome, trace_id = uow.scheduled.reschedule(client_id, parsed, due)
        # Issue 20: released onto its queue's band, as the scheduler would.
        entries = queues.queue_entries(uow, [parsed]) if outcome == ChangeOutcome.DONE else []
        uow.commit()
    _raise_unless_done(outcome, message_id)
    message = Message(
        id=parsed,
        client_id=client_id,
        trace_id=trace_id or "",
        template_name="",
        from_address="",
        to=[],
        scheduled_at=due,
    )
    sending.release_if_near(
        uow,
        queue,
        message,
        now=now,
        lookahead_seconds=lookahead_seconds,
        band=entries[0].band if entries else Band.NORMAL,
    )
    return Rescheduled(moment, in_past=moment <= now)


def _message_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise MessageNotFound(f"no message with id '{raw}'") from None


def _raise_unless_done(outcome: str, message_id: str) -> None:
    if outcome == ChangeOutcome.MISSING:
        raise MessageNotFound(f"no message with id '{message_id}'")
    if outcome == ChangeOutcome.NOT_SCHEDULED:
        raise NotScheduled(
            f"message {message_id} is not scheduled: sending has begun, or it was "
            "sent, cancelled or never scheduled"
        )


# --- recurring schedules -------------------------------------------------------


# Checks a send payload as /v1/send would (sending.check_send, wired by the caller).
CheckPayload = Callable[[Client, SendRequest], None]
# Checks a batch payload as a batch would be checked and more (batches.check_batch).
CheckBatchPayload = Callable[[Client, BatchRequest], None]


def _refuse_batch_check(client: Client, request: BatchRequest) -> None:
    raise InvalidRequest("batch payloads are not available here: give a send payload")


@dataclass(slots=True)
class ScheduleSpec:
    """What a client asks for in POST (all given) or PATCH (``given`` says which)."""

    name: str | None = None
    cron: str | None = None
    timezone: str | None = None
    send: SendRequest | None = None
    # Issue 18: a /v1/batches payload (inline recipients) instead of send.
    batch: BatchRequest | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    misfire_policy: MisfirePolicy | None = None
    misfire_grace_seconds: int | None = None
    given: set[str] = field(default_factory=set)


def create_schedule(
    uow: UnitOfWork,
    *,
    client: Client,
    spec: ScheduleSpec,
    now: datetime,
    check_payload: CheckPayload,
    is_test: bool,
    check_batch: CheckBatchPayload = _refuse_batch_check,
) -> Schedule:
    assert spec.name
    assert spec.cron
    assert spec.timezone
    if (spec.send is None) == (spec.batch is None):
        raise InvalidRequest(
            "a schedule sends one payload: give send (a /v1/send body) or batch "
            "(a /v1/batches body), not both and not neither",
            details=[{"field": "send", "type": "one_payload"}],
        )
    schedule = Schedule(
        id=uuid.uuid4(),
        client_id=client.id,
        name=spec.name,
        cron=spec.cron,
        timezone=spec.timezone,
        send={},
        misfire_policy=spec.misfire_policy or MisfirePolicy.SEND,
        misfire_grace_seconds=(
            spec.misfire_grace_seconds if spec.misfire_grace_seconds is not None else 300
        ),
        starts_at=spec.starts_at,
        ends_at=spec.ends_at,
        is_test=is_test,
    )
    if spec.send is not None:
        _apply_payload(schedule, client, spec.send, check_payload)
    else:
        assert spec.batch is not None
        _apply_batch_payload(schedule, client, spec.batch, check_batch)
    _validate_and_plan(schedule, now)
    with uow:
        uow.schedules.add(schedule)
        uow.commit()
    return schedule


def update_schedule(
    uow: UnitOfWork,
    *,
    client: Client,
    schedule_id: str,
    spec: ScheduleSpec,
    now: datetime,
    check_payload: CheckPayload,
    check_batch: CheckBatchPayload = _refuse_batch_check,
) -> Schedule:
    if "send" in spec.given and "batch" in spec.given:
        raise InvalidRequest(
            "give send or batch, not both: the other is replaced",
            details=[{"field": "batch", "type": "one_payload"}],
        )
    with uow:
        schedule = _locked(uow, client.id, schedule_id)
        for name in ("name", "cron", "timezone", "misfire_policy", "misfire_grace_seconds"):
            if name in spec.given:
                value = getattr(spec, name)
                if value is None:
                    raise InvalidRequest(
                        f"{name} cannot be null", details=[{"field": name, "type": "null"}]
                    )
                setattr(schedule, name, value)
        if "starts_at" in spec.given:
            schedule.starts_at = spec.starts_at
        if "ends_at" in spec.given:
            schedule.ends_at = spec.ends_at
        if "send" in spec.given:
            if spec.send is None:
                raise InvalidRequest(
                    "send cannot be null", details=[{"field": "send", "type": "null"}]
                )
            _apply_payload(schedule, client, spec.send, check_payload)
        if "batch" in spec.given:
            if spec.batch is None:
                raise InvalidRequest(
                    "batch cannot be null", details=[{"field": "batch", "type": "null"}]
                )
            _apply_batch_payload(schedule, client, spec.batch, check_batch)
        if schedule.state is ScheduleState.FINISHED and (
            schedule.ends_at is None or schedule.ends_at > now
        ):
            # A later ends_at (or none) brings a finished schedule back.
            schedule.state = ScheduleState.ACTIVE
        _validate_and_plan(schedule, now)
        uow.schedules.save(schedule)
        uow.commit()
    return schedule


def get_schedule(uow: UnitOfWork, *, client_id: uuid.UUID, schedule_id: str) -> Schedule:
    with uow:
        schedule = uow.schedules.get(client_id, _schedule_id(schedule_id))
    if schedule is None:
        raise ScheduleNotFound(f"no schedule with id '{schedule_id}'")
    return schedule


def list_schedules(
    uow: UnitOfWork, *, client_id: uuid.UUID, cursor: str | None, limit: int
) -> tuple[list[Schedule], str | None]:
    after = _cursor(cursor)
    with uow:
        page = uow.schedules.page(client_id, after=after, limit=limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return page, (str(page[-1].id) if more else None)


def delete_schedule(uow: UnitOfWork, *, client_id: uuid.UUID, schedule_id: str) -> None:
    with uow:
        gone = uow.schedules.delete(client_id, _schedule_id(schedule_id))
        uow.commit()
    if not gone:
        raise ScheduleNotFound(f"no schedule with id '{schedule_id}'")


def pause_schedule(
    uow: UnitOfWork, *, client_id: uuid.UUID, schedule_id: str, now: datetime
) -> Schedule:
    with uow:
        schedule = _locked(uow, client_id, schedule_id)
        if schedule.state is ScheduleState.FINISHED:
            raise ScheduleFinished(f"schedule {schedule_id} has ended (ends_at has passed)")
        schedule.state = ScheduleState.PAUSED
        uow.schedules.save(schedule)
        uow.commit()
    return schedule


def resume_schedule(
    uow: UnitOfWork, *, client_id: uuid.UUID, schedule_id: str, now: datetime
) -> Schedule:
    """Active again from now on: fire times that passed while paused are not caught up."""
    with uow:
        schedule = _locked(uow, client_id, schedule_id)
        if schedule.state is ScheduleState.FINISHED:
            raise ScheduleFinished(f"schedule {schedule_id} has ended (ends_at has passed)")
        schedule.state = ScheduleState.ACTIVE
        schedule.next_run_at = schedule.first_fire_after(now)
        if schedule.next_run_at is None:
            schedule.state = ScheduleState.FINISHED
        uow.schedules.save(schedule)
        uow.commit()
    return schedule


def run_now(
    uow: UnitOfWork,
    send_run: SendRun,
    *,
    client_id: uuid.UUID,
    schedule_id: str,
    clock: Clock,
) -> ScheduleRun:
    """One run outside the cron, at once; the next fire time stays as it was."""
    now = clock.now()
    with uow:
        schedule = _locked(uow, client_id, schedule_id)
        if schedule.state is ScheduleState.PAUSED:
            raise SchedulePaused(f"schedule {schedule_id} is paused: resume it to run it")
        if schedule.state is ScheduleState.FINISHED:
            raise ScheduleFinished(f"schedule {schedule_id} has ended (ends_at has passed)")
        run = ScheduleRun(
            id=uuid.uuid4(),
            schedule_id=schedule.id,
            fire_at=now,
            trigger=RunTrigger.RUN_NOW,
            started_at=now,
        )
        uow.schedules.add_run(run)
        uow.commit()
    return execute_run(uow, send_run, schedule, run, clock=clock)


def list_runs(
    uow: UnitOfWork,
    *,
    client_id: uuid.UUID,
    schedule_id: str,
    cursor: str | None,
    limit: int,
) -> tuple[list[ScheduleRun], str | None]:
    parsed = _schedule_id(schedule_id)
    after = _cursor(cursor)
    with uow:
        if uow.schedules.get(client_id, parsed) is None:
            raise ScheduleNotFound(f"no schedule with id '{schedule_id}'")
        runs = uow.schedules.runs(parsed, after=after, limit=limit + 1)
    more = len(runs) > limit
    runs = runs[:limit]
    return runs, (str(runs[-1].id) if more else None)


def send_request_of(schedule: Schedule) -> SendRequest:
    """The stored payload as the request it was validated as."""
    return SendRequest.model_validate(schedule.send)


def batch_request_of(schedule: Schedule) -> BatchRequest:
    """The stored batch payload as the request it was validated as."""
    return BatchRequest.model_validate(schedule.batch)


def batch_outcomes(uow: UnitOfWork, runs: list[ScheduleRun]) -> dict[uuid.UUID, BatchSummary]:
    """The batches these runs created, as they stand now: one read for the page."""
    with uow:
        return uow.batches.summaries([run.batch_id for run in runs if run.batch_id is not None])


def _apply_payload(
    schedule: Schedule, client: Client, request: SendRequest, check_payload: CheckPayload
) -> None:
    if request.scheduled_at is not None:
        raise InvalidRequest(
            "send.scheduled_at: a schedule's runs send at their fire times",
            details=[{"field": "send.scheduled_at", "type": "not_allowed"}],
        )
    check_payload(client, request)
    payload: dict[str, Any] = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    if "bulk" not in request.model_fields_set:
        # Left out, as the caller did: an explicit "bulk": false is refused for
        # a bulk template (services/sending.bulk_of), and the template may
        # become bulk after the schedule was made.
        payload.pop("bulk", None)
    schedule.send = payload
    schedule.batch = None


# Batch fields a schedule never stores: the recipients are inline, and a
# batch's own to/cc/bcc are refused anyway.
_UNSTORED_BATCH_FIELDS = {"to", "cc", "bcc", "recipients_upload", "upload_format"}


def _apply_batch_payload(
    schedule: Schedule, client: Client, request: BatchRequest, check_batch: CheckBatchPayload
) -> None:
    if request.scheduled_at is not None:
        raise InvalidRequest(
            "batch.scheduled_at: a schedule's runs send at their fire times",
            details=[{"field": "batch.scheduled_at", "type": "not_allowed"}],
        )
    if request.recipients_upload:
        raise InvalidRequest(
            "batch.recipients_upload: a schedule's batch lists its recipients inline "
            "(each run reads them again); upload a file to one batch with POST /v1/batches",
            details=[{"field": "batch.recipients_upload", "type": "not_allowed"}],
        )
    check_batch(client, request)
    schedule.batch = request.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude=_UNSTORED_BATCH_FIELDS
    )
    schedule.send = None


def _validate_and_plan(schedule: Schedule, now: datetime) -> None:
    zone(schedule.timezone)
    check_cron(schedule.cron, schedule.timezone, now=now)
    if schedule.starts_at is not None and schedule.starts_at.tzinfo is None:
        raise InvalidRequest("starts_at needs an offset")
    if (
        schedule.starts_at is not None
        and schedule.ends_at is not None
        and schedule.ends_at <= schedule.starts_at
    ):
        raise InvalidRequest(
            "ends_at must be after starts_at",
            details=[{"field": "ends_at", "type": "ends_before_start"}],
        )
    if schedule.ends_at is not None and schedule.ends_at <= now:
        raise InvalidRequest(
            "ends_at has already passed", details=[{"field": "ends_at", "type": "in_past"}]
        )
    next_run = schedule.first_fire_after(now)
    if next_run is None:
        raise InvalidRequest(
            "the schedule never fires between starts_at and ends_at",
            details=[{"field": "cron", "type": "cron_never_fires"}],
        )
    if schedule.state is ScheduleState.ACTIVE:
        schedule.next_run_at = next_run
    elif schedule.state is ScheduleState.PAUSED:
        # Resume computes it again from its own moment.
        schedule.next_run_at = next_run


def _locked(uow: UnitOfWork, client_id: uuid.UUID, schedule_id: str) -> Schedule:
    schedule = uow.schedules.get_for_update(client_id, _schedule_id(schedule_id))
    if schedule is None:
        raise ScheduleNotFound(f"no schedule with id '{schedule_id}'")
    return schedule


def _schedule_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ScheduleNotFound(f"no schedule with id '{raw}'") from None


def _cursor(raw: str | None) -> uuid.UUID | None:
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidRequest(
            "cursor: not a cursor this API returned", details=[{"field": "cursor"}]
        ) from None
