"""Scheduling routes (issue 18): cancel or move a scheduled message; recurring schedules.

``/v1/messages/{id}/cancel`` and ``PATCH /v1/messages/{id}`` are the status
function's (the message's other routes live there); ``/v1/schedules`` is the
send function's, since a run now renders and queues like a send.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from mailroom.adapters.db.batches import Batch, BatchSummary
from mailroom.bootstrap import Services
from mailroom.domain.batches import BatchRequest
from mailroom.domain.commands import OffsetDateTime, SendRequest
from mailroom.domain.model import Client, Message, MessageStatus
from mailroom.domain.scheduling import (
    MAX_SCHEDULE_NAME,
    MisfirePolicy,
    RunStatus,
    RunTrigger,
    Schedule,
    ScheduleRun,
    ScheduleState,
    zone,
)
from mailroom.domain.tenancy import KeyKind, Scope
from mailroom.entrypoints.api import sender_check_for
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.services import batches, queues, schedules, sending
from mailroom.services.quotas import BatchQuotaCharge, QuotaCharge
from mailroom.services.scheduler import SendRun
from mailroom.services.smtp_configs import relay_resolver

ServicesProvider = Callable[[], Services]
TAGS = ["schedules"]
SCHEDULE_ID = Path(max_length=64, description="The schedule's id.")
MESSAGE_ID = Path(max_length=64, description="The message's id.")
_NOT_FOUND = {404: "schedule_not_found: no such schedule for this client"}
_MISFIRE_DESCRIPTION = (
    "What a run later than misfire_grace_seconds does (the scheduler was down): "
    "`send` runs once for all missed fire times, `skip` runs none and records a skipped run."
)


# --- one scheduled message ---------------------------------------------------


class RescheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheduled_at: OffsetDateTime = Field(
        description="The new time: RFC 3339 with an offset, at most 30 days ahead; "
        "a time already past sends now.",
        examples=["2026-12-24T09:00:00+01:00"],
    )


class ScheduledMessageView(BaseModel):
    id: uuid.UUID
    status: MessageStatus
    scheduled_at: datetime | None = Field(default=None, description="In UTC.")
    note: str | None = None


def message_schedule_routes(services: ServicesProvider) -> Router:
    from mailroom.entrypoints.api import caller_of

    router = Router()

    @router.post(
        "/v1/messages/<message_id>/cancel",
        summary="Cancel a scheduled message",
        description=(
            "Only before sending begins: a cancel answered 200 means the message is never "
            "sent. Once the worker has taken it: 409 not_scheduled."
        ),
        responses=answers(
            200,
            "Cancelled",
            ScheduledMessageView,
            errors={
                404: "message_not_found: no such message for this client",
                409: "not_scheduled: sending has begun, or the message was not scheduled",
            },
        ),
        tags=["messages"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def cancel(message_id: Annotated[str, MESSAGE_ID]) -> ScheduledMessageView:
        active = services()
        client = caller_of(router, active, Scope.EMAIL_SEND).client
        schedules.cancel_message(active.uow(), client_id=client.id, message_id=message_id)
        logger.info("scheduled message cancelled", extra={"message_id": message_id})
        return ScheduledMessageView(id=uuid.UUID(message_id), status=MessageStatus.CANCELLED)

    @router.patch(
        "/v1/messages/<message_id>",
        summary="Move a scheduled message to another time",
        responses=answers(
            200,
            "Rescheduled",
            ScheduledMessageView,
            errors={
                404: "message_not_found: no such message for this client",
                409: "not_scheduled: sending has begun, or the message was not scheduled",
                422: "validation_error: scheduled_at without an offset or over 30 days ahead",
            },
        ),
        tags=["messages"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def reschedule(
        message_id: Annotated[str, MESSAGE_ID],
        request: Annotated[RescheduleRequest, Body()],
    ) -> ScheduledMessageView:
        active = services()
        client = caller_of(router, active, Scope.EMAIL_SEND).client
        moved = schedules.reschedule_message(
            active.uow(),
            active.queue,
            client_id=client.id,
            message_id=message_id,
            scheduled_at=request.scheduled_at,
            now=active.clock.now(),
            lookahead_seconds=active.settings.scheduler_lookahead_seconds,
        )
        return ScheduledMessageView(
            id=uuid.UUID(message_id),
            status=MessageStatus.SCHEDULED,
            scheduled_at=moved.scheduled_at,
            note="scheduled_at has passed: the message is sent now" if moved.in_past else None,
        )

    return router


# --- recurring schedules -------------------------------------------------------


class CreateScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_SCHEDULE_NAME)
    cron: str = Field(
        min_length=1,
        max_length=100,
        description="Five fields: minute hour day-of-month month day-of-week, in `timezone`.",
        examples=["0 9 * * 1-5"],
    )
    timezone: str = Field(
        min_length=1, max_length=64, description="IANA time zone", examples=["Europe/Berlin"]
    )
    send: SendRequest | None = Field(
        default=None,
        description=(
            "A POST /v1/send body (without scheduled_at), checked now as a send would be. "
            "Give this or `batch`."
        ),
    )
    batch: BatchRequest | None = Field(
        default=None,
        description=(
            "A POST /v1/batches body with its recipients inline (no upload, no scheduled_at): "
            "each run creates a bulk batch. Checked now: every recipient's address, and the "
            "content as /v1/send checks it, rendered with each distinct shape of the "
            "recipients' props. Give this or `send`. The request is at most 256 KiB."
        ),
    )
    starts_at: OffsetDateTime | None = None
    ends_at: OffsetDateTime | None = None
    misfire_policy: MisfirePolicy = Field(
        default=MisfirePolicy.SEND, description=_MISFIRE_DESCRIPTION
    )
    misfire_grace_seconds: int = Field(default=300, ge=0, le=7 * 86_400)


class UpdateScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=MAX_SCHEDULE_NAME)
    cron: str | None = Field(default=None, min_length=1, max_length=100)
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    send: SendRequest | None = Field(
        default=None, description="Replaces the payload (a batch one too) with this send."
    )
    batch: BatchRequest | None = Field(
        default=None, description="Replaces the payload (a send one too) with this batch."
    )
    starts_at: OffsetDateTime | None = None
    ends_at: OffsetDateTime | None = None
    misfire_policy: MisfirePolicy | None = None
    misfire_grace_seconds: int | None = Field(default=None, ge=0, le=7 * 86_400)


class ScheduleView(BaseModel):
    id: uuid.UUID
    name: str
    cron: str
    timezone: str
    send: dict[str, Any] | None = Field(description="The /v1/send payload, or null.")
    batch: dict[str, Any] | None = Field(description="The /v1/batches payload, or null.")
    state: ScheduleState
    mode: KeyKind
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int
    starts_at: datetime | None
    ends_at: datetime | None
    next_run_at: datetime | None = Field(description="In UTC; null when it never fires again.")
    next_run_at_local: str | None = Field(
        description="The same moment in the schedule's time zone, with its offset."
    )
    last_run_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


class SchedulePageView(BaseModel):
    schedules: list[ScheduleView]
    next_cursor: str | None


class RunBatchView(BaseModel):
    status: str = Field(description="scheduled, accepted, planning, sending, finished, ...")
    total: int | None
    sent: int = Field(description="Messages handed to a provider")
    failed: int
    cancelled: int


class RunView(BaseModel):
    id: uuid.UUID
    schedule_id: uuid.UUID
    fire_at: datetime
    trigger: RunTrigger
    status: RunStatus
    started_at: datetime | None
    finished_at: datetime | None
    message_ids: list[uuid.UUID]
    batch_id: uuid.UUID | None = Field(
        default=None, description="A batch payload's run: the bulk batch it created."
    )
    batch: RunBatchView | None = Field(
        default=None,
        description="That batch as it stands now (GET /v1/batches/{id} has every count).",
    )
    detail: dict[str, Any] = Field(
        description="Why it failed (code, message) or was skipped (reason), missed fire times."
    )


class RunPageView(BaseModel):
    runs: list[RunView]
    next_cursor: str | None


def schedule_view(schedule: Schedule) -> ScheduleView:
    local = (
        schedule.next_run_at.astimezone(zone(schedule.timezone)).isoformat()
        if schedule.next_run_at is not None
        else None
    )
    return ScheduleView(
        id=schedule.id,
        name=schedule.name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        send=schedule.send,
        batch=schedule.batch,
        state=schedule.state,
        mode=KeyKind.TEST if schedule.is_test else KeyKind.LIVE,
        misfire_policy=schedule.misfire_policy,
        misfire_grace_seconds=schedule.misfire_grace_seconds,
        starts_at=schedule.starts_at,
        ends_at=schedule.ends_at,
        next_run_at=schedule.next_run_at,
        next_run_at_local=local,
        last_run_at=schedule.last_run_at,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


def run_view(run: ScheduleRun, outcomes: dict[uuid.UUID, BatchSummary] | None = None) -> RunView:
    summary = (outcomes or {}).get(run.batch_id) if run.batch_id is not None else None
    return RunView(
        id=run.id,
        schedule_id=run.schedule_id,
        fire_at=run.fire_at,
        trigger=run.trigger,
        status=run.status,
        started_at=run.started_at,
        finished_at=run.finished_at,
        message_ids=run.message_ids,
        batch_id=run.batch_id,
        batch=RunBatchView(
            status=summary.status.value,
            total=summary.total,
            sent=summary.sent,
            failed=summary.failed,
            cancelled=summary.cancelled,
        )
        if summary is not None
        else None,
        detail=run.detail,
    )


def schedule_sender(services: Services) -> SendRun:
    """A run's messages: one /v1/send of the stored payload, charged like one.

    A batch payload's run is one POST /v1/batches of it: a bulk batch linked
    to the schedule and the run, planned at once, and charged as that POST
    is: every recipient against the client's quota, all or none (a run that
    does not fit fails with the quota's code and writes nothing). Test mode
    is never charged.
    """

    def send_run(schedule: Schedule, client: Client, run: ScheduleRun) -> list[Message] | Batch:
        test = schedule.is_test or client.sandbox_mode
        mode = KeyKind.TEST if test else KeyKind.LIVE
        if schedule.batch is not None:
            return batches.accept_batch(
                services.uow(),
                services.templates,
                services.planner_queue,
                services.recipient_files,
                services.batch_limits,
                client=client,
                request=schedules.batch_request_of(schedule),
                trace_id=uuid.uuid4().hex,
                mode=mode,
                contents=services.inline_contents,
                now=services.clock.now(),
                run=sending.RunLink(schedule.id, run.id),
                quota=None if test else BatchQuotaCharge(services.quota, services.uow, client),
                resolve_relay=relay_resolver(services.uow(), client.id),
                # SENDER_VERIFICATION, as POST /v1/batches: a domain unverified
                # since the schedule was made fails the run with its code.
                check_sender=sending.sender_check(
                    sender_check_for(services, mode), services.uow(), client
                ),
            ).batch
        request = schedules.send_request_of(schedule)
        with QuotaCharge(services.quota, services.uow, client) as quota:
            message = sending.accept_message(
                services.uow(),
                services.queue,
                services.templates,
                services.send_limits,
                client=client,
                request=request,
                trace_id=uuid.uuid4().hex,
                renderer=services.renderer,
                reserve_quota=None if test else quota.take,
                mode=mode,
                run=sending.RunLink(schedule.id, run.id),
                contents=services.inline_contents,
                # As /v1/send: the payload's relay, and its queue's band (held
                # while paused). A relay or queue gone since fails the run with
                # its code (execute_run); the schedule goes on.
                resolve_relay=relay_resolver(services.uow(), client.id),
                routing=services.queue_routing,
                senders=sender_check_for(services, mode),
            )
        return [message]

    return send_run


def _payload_checker(services: Services, mode: KeyKind) -> schedules.CheckPayload:
    """/v1/send's checks, its relay and queue included: what each run will pass through."""

    def check(client: Client, request: SendRequest) -> None:
        sending.check_send(
            services.templates,
            services.renderer,
            services.send_limits,
            client=client,
            request=request,
            mode=mode,
            resolve_relay=relay_resolver(services.uow(), client.id),
            check_sender=sending.sender_check(
                sender_check_for(services, mode), services.uow(), client
            ),
            # Without routing a run refuses any named queue, so creation does too.
            check_queue=queues.queue_checker(services.uow(), client.id)
            if services.queue_routing
            else None,
        )

    return check


def _batch_checker(services: Services, mode: KeyKind) -> schedules.CheckBatchPayload:
    def check(client: Client, request: BatchRequest) -> None:
        batches.check_batch(
            services.templates,
            services.renderer,
            services.send_limits,
            client=client,
            request=request,
            mode=mode,
            resolve_relay=relay_resolver(services.uow(), client.id),
            check_sender=sending.sender_check(
                sender_check_for(services, mode), services.uow(), client
            ),
            # accept_batch places every batch on a queue, routing or not.
            check_queue=queues.queue_checker(services.uow(), client.id),
        )

    return check


def _spec(request: CreateScheduleRequest | UpdateScheduleRequest) -> schedules.ScheduleSpec:
    return schedules.ScheduleSpec(
        name=request.name,
        cron=request.cron,
        timezone=request.timezone,
        send=request.send,
        batch=request.batch,
        starts_at=request.starts_at,
        ends_at=request.ends_at,
        misfire_policy=request.misfire_policy,
        misfire_grace_seconds=request.misfire_grace_seconds,
        given=set(request.model_fields_set),
    )


_CREATE_ERRORS = {
    422: (
        "validation_error (a bad cron, one that never fires, an unknown timezone, ends_at "
        "not after starts_at or past, send and batch both or neither, a batch with an upload "
        "or a bad recipient address), or any refusal POST /v1/send gives its payload (for a "
        "batch: naming the recipient): unknown_template, invalid_props, missing_prop, "
        "render_error, header_injection; unknown_smtp_config: the payload's smtp_config is "
        "not an active relay of this client; unknown_queue: the client has no queue of the "
        "payload's queue name; sender_not_verified: with SENDER_VERIFICATION on, the "
        "payload's from domain is not a verified sending domain of this client (a run whose "
        "domain is no longer verified fails with that code)"
    ),
    409: "queue_draining: the payload's queue is draining and takes no new mail",
}


def schedule_routes(services: ServicesProvider) -> Router:
    from mailroom.entrypoints.api import caller_of

    router = Router()
    security = client_key(Scope.SCHEDULE_MANAGE)

    def me() -> tuple[Services, Client, KeyKind]:
        active = services()
        caller = caller_of(router, active, Scope.SCHEDULE_MANAGE)
        return active, caller.client, caller.mode

    @router.post(
        "/v1/schedules",
        status_code=201,
        summary="Create a recurring send",
        description=(
            "The payload is checked as POST /v1/send checks it, now, its `smtp_config` and "
            "`queue` included. Each run sends it as a new message (a `send` payload) or a new "
            "bulk batch (a `batch` payload) linked to the schedule and the run, through its "
            "queue (held while the queue is paused) and relay as /v1/send would; a run whose "
            "queue or relay is gone by then fails with that code and the schedule goes on. "
            "Daylight saving follows cron: "
            "a time in the spring-forward gap runs right after the jump; a time in the "
            "repeated fall-back hour runs once."
        ),
        responses=answers(201, "Created", ScheduleView, errors=_CREATE_ERRORS),
        tags=TAGS,
        security=security,
    )
    def create(request: Annotated[CreateScheduleRequest, Body()]) -> Response[str]:
        active, client, mode = me()
        schedule = schedules.create_schedule(
            active.uow(),
            client=client,
            spec=_spec(request),
            now=active.clock.now(),
            check_payload=_payload_checker(active, mode),
            is_test=mode is KeyKind.TEST,
            check_batch=_batch_checker(active, mode),
        )
        logger.info("schedule created", extra={"schedule_id": str(schedule.id)})
        created = schedules.get_schedule(
            active.uow(), client_id=client.id, schedule_id=str(schedule.id)
        )
        return Response(
            status_code=201,
            content_type=content_types.APPLICATION_JSON,
            body=schedule_view(created).model_dump_json(),
        )

    @router.get(
        "/v1/schedules",
        summary="The client's schedules, newest first",
        responses=answers(
            200,
            "One page",
            SchedulePageView,
            errors={422: "validation_error: a cursor this API did not return"},
        ),
        tags=TAGS,
        security=security,
    )
    def list_all(
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=schedules.MAX_PAGE)] = 50,
    ) -> SchedulePageView:
        active, client, _ = me()
        page, next_cursor = schedules.list_schedules(
            active.uow(), client_id=client.id, cursor=cursor, limit=limit
        )
        return SchedulePageView(schedules=[schedule_view(s) for s in page], next_cursor=next_cursor)

    @router.get(
        "/v1/schedules/<schedule_id>",
        summary="One schedule, with its next fire time in UTC and in its time zone",
        responses=answers(200, "The schedule", ScheduleView, errors=_NOT_FOUND),
        tags=TAGS,
        security=security,
    )
    def get_one(schedule_id: Annotated[str, SCHEDULE_ID]) -> ScheduleView:
        active, client, _ = me()
        return schedule_view(
            schedules.get_schedule(active.uow(), client_id=client.id, schedule_id=schedule_id)
        )

    @router.patch(
        "/v1/schedules/<schedule_id>",
        summary="Change a schedule; the next fire time is worked out again",
        responses=answers(
            200, "The schedule", ScheduleView, errors={**_NOT_FOUND, **_CREATE_ERRORS}
        ),
        tags=TAGS,
        security=security,
    )
    def update(
        schedule_id: Annotated[str, SCHEDULE_ID],
        request: Annotated[UpdateScheduleRequest, Body()],
    ) -> ScheduleView:
        active, client, mode = me()
        schedules.update_schedule(
            active.uow(),
            client=client,
            schedule_id=schedule_id,
            spec=_spec(request),
            now=active.clock.now(),
            check_payload=_payload_checker(active, mode),
            check_batch=_batch_checker(active, mode),
        )
        return schedule_view(
            schedules.get_schedule(active.uow(), client_id=client.id, schedule_id=schedule_id)
        )

    @router.delete(
        "/v1/schedules/<schedule_id>",
        summary="Delete a schedule and its runs (the messages it sent stay)",
        responses=answers(200, "The schedule as it was", ScheduleView, errors=_NOT_FOUND),
        tags=TAGS,
        security=security,
    )
    def remove(schedule_id: Annotated[str, SCHEDULE_ID]) -> ScheduleView:
        active, client, _ = me()
        schedule = schedules.get_schedule(
            active.uow(), client_id=client.id, schedule_id=schedule_id
        )
        schedules.delete_schedule(active.uow(), client_id=client.id, schedule_id=schedule_id)
        return schedule_view(schedule)

    _state_errors = {
        **_NOT_FOUND,
        409: "schedule_finished: its ends_at has passed",
    }

    @router.post(
        "/v1/schedules/<schedule_id>/pause",
        summary="Pause a schedule: nothing fires until it is resumed",
        responses=answers(200, "Paused", ScheduleView, errors=_state_errors),
        tags=TAGS,
        security=security,
    )
    def pause(schedule_id: Annotated[str, SCHEDULE_ID]) -> ScheduleView:
        active, client, _ = me()
        return schedule_view(
            schedules.pause_schedule(
                active.uow(),
                client_id=client.id,
                schedule_id=schedule_id,
                now=active.clock.now(),
            )
        )

    @router.post(
        "/v1/schedules/<schedule_id>/resume",
        summary="Resume a schedule from now (fire times missed while paused do not run)",
        responses=answers(200, "Active", ScheduleView, errors=_state_errors),
        tags=TAGS,
        security=security,
    )
    def resume(schedule_id: Annotated[str, SCHEDULE_ID]) -> ScheduleView:
        active, client, _ = me()
        return schedule_view(
            schedules.resume_schedule(
                active.uow(),
                client_id=client.id,
                schedule_id=schedule_id,
                now=active.clock.now(),
            )
        )

    @router.post(
        "/v1/schedules/<schedule_id>/run",
        status_code=201,
        summary="Run a schedule now, outside its cron",
        description=(
            "The run is recorded like any other; a failed one (its template, queue or relay "
            "deleted since, say) answers 201 with status failed and why. The next fire time is "
            "unchanged."
        ),
        responses=answers(
            201,
            "The run",
            RunView,
            errors={
                **_NOT_FOUND,
                409: "schedule_paused: resume it first; schedule_finished: ends_at has passed",
            },
        ),
        tags=TAGS,
        security=security,
    )
    def run(schedule_id: Annotated[str, SCHEDULE_ID]) -> Response[str]:
        active, client, _ = me()
        done = schedules.run_now(
            active.uow(),
            schedule_sender(active),
            client_id=client.id,
            schedule_id=schedule_id,
            clock=active.clock,
        )
        return Response(
            status_code=201,
            content_type=content_types.APPLICATION_JSON,
            body=run_view(done, schedules.batch_outcomes(active.uow(), [done])).model_dump_json(),
        )

    @router.get(
        "/v1/schedules/<schedule_id>/runs",
        summary="A schedule's runs, newest first: what each sent, or why it did not",
        responses=answers(
            200,
            "One page",
            RunPageView,
            errors={**_NOT_FOUND, 422: "validation_error: a cursor this API did not return"},
        ),
        tags=TAGS,
        security=security,
    )
    def runs(
        schedule_id: Annotated[str, SCHEDULE_ID],
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=schedules.MAX_PAGE)] = 50,
    ) -> RunPageView:
        active, client, _ = me()
        page, next_cursor = schedules.list_runs(
            active.uow(), client_id=client.id, schedule_id=schedule_id, cursor=cursor, limit=limit
        )
        outcomes = schedules.batch_outcomes(active.uow(), page)
        return RunPageView(runs=[run_view(r, outcomes) for r in page], next_cursor=next_cursor)

    return router
