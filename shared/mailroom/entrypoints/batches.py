"""/v1/batches: bulk batches with a planner and progress (issue 17, items 3 and 5).

Served by the batches function: its request limit is large enough for
10,000 inline recipients, and it alone may write to the planner queue and
presign uploads to the recipients bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from mailroom.adapters.db.batches import Batch
from mailroom.bootstrap import Services
from mailroom.domain.batches import MAX_INLINE_RECIPIENTS, MAX_UPLOAD_BYTES, BatchRequest
from mailroom.domain.commands import OffsetDateTime
from mailroom.domain.errors import BatchNotFound
from mailroom.domain.tenancy import KeyKind, Scope
from mailroom.entrypoints.api import caller_of, sender_check_for, trace_id_of
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.services import batches, scheduled_batches, sending
from mailroom.services.quotas import BatchQuotaCharge
from mailroom.services.reputation import SENDING_PAUSED, refuse_if_paused
from mailroom.services.smtp_configs import relay_resolver

ServicesProvider = Callable[[], Services]

MAX_PAGE = 500
# What ?status= may name: a message status, or why a recipient got no message.
RecipientState = Literal[
    "queued",
    "sending",
    "sent",
    "delivered",
    "bounced",
    "failed",
    "spam",
    "cancelled",
    "rejected",
    "suppressed",
    "duplicate",
]


class BatchAccepted(BaseModel):
    id: uuid.UUID
    status: str = Field(
        description="accepted; scheduled (scheduled_at ahead); awaiting_upload for an upload"
    )
    total: int | None = Field(description="Recipients listed; null until an upload is planned")
    scheduled_at: datetime | None = Field(
        default=None, description="When the batch is planned and sent, in UTC."
    )
    note: str | None = Field(
        default=None, description="Set when scheduled_at had passed: the batch is sent now."
    )
    upload_url: str | None = Field(
        default=None,
        description=(
            "recipients_upload only: PUT the NDJSON or CSV file here (at most "
            f"{MAX_UPLOAD_BYTES} bytes), then POST /v1/batches/{{id}}/start. Using it again "
            "before start replaces the file; after start it changes nothing (the batch reads "
            "a copy taken at start)."
        ),
    )
    upload_expires_at: datetime | None = None


class BatchView(BaseModel):
    id: uuid.UUID
    status: str = Field(
        description=(
            "scheduled, awaiting_upload, accepted, planning, sending, finished, cancelled, failed"
        )
    )
    total: int | None = Field(
        description="Recipients in the batch; null until an upload is planned"
    )
    scheduled_at: datetime | None = Field(
        default=None, description="When it is (or was) due to be planned and sent, in UTC."
    )
    planned: int = Field(description="Recipients the planner has settled (a message or a reason)")
    queued: int = Field(description="Messages waiting for, or in, a send")
    sent: int = Field(description="Messages handed to a provider (delivered and bounced included)")
    delivered: int
    bounced: int
    failed: int = Field(description="Messages that failed to send")
    complained: int
    suppressed: int = Field(description="Recipients on the suppression list: no message")
    rejected: int = Field(description="Bad addresses and malformed lines: no message")
    duplicates: int = Field(description="Addresses listed again: sent once")
    cancelled: int = Field(description="Messages the cancel stopped before any send")
    error: str | None = Field(description="Why a failed batch could not be planned")
    created_at: datetime | None
    started_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    rate_per_minute: float = Field(description="Messages sent per minute since the batch started")


class RescheduleBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheduled_at: OffsetDateTime = Field(
        description="The new time: RFC 3339 with an offset, at most 30 days ahead; "
        "a time already past plans the batch now.",
        examples=["2026-12-24T09:00:00+01:00"],
    )


class RescheduledBatchView(BatchView):
    note: str | None = Field(
        default=None, description="Set when scheduled_at had passed: the batch is sent now."
    )


class RecipientOutcomeView(BaseModel):
    index: int = Field(description="The recipient's place in the batch, from 0")
    line: int | None = Field(description="Its line in the uploaded file, when known")
    address: str | None
    status: str
    reason: str | None
    message_id: uuid.UUID | None


class RecipientPage(BaseModel):
    recipients: list[RecipientOutcomeView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class RetryAnswer(BaseModel):
    retried: int = Field(description="Transiently failed messages queued again")
    batch: BatchView


_NOT_FOUND = {404: "batch_not_found: no such batch for this client"}
PAST_BATCH_NOTE = "scheduled_at has passed: the batch is sent now"


def _accepted_note(accepted: batches.AcceptedBatch) -> str | None:
    """What the answer says beside the status: a past time, a paused queue (issue 20)."""
    notes = []
    if accepted.in_past:
        notes.append(PAST_BATCH_NOTE)
    if accepted.held_by is not None:
        notes.append(
            f"queue {accepted.held_by!r} is paused: the batch's messages are held until it resumes"
        )
    return "; ".join(notes) or None


def batch_view(batch: Batch) -> BatchView:
    return BatchView(
        id=batch.id,
        status=batch.status.value,
        total=batch.total,
        planned=batch.planned,
        queued=batch.queued,
        sent=batch.handed_over,
        delivered=batch.delivered,
        bounced=batch.bounced,
        failed=batch.failed,
        complained=batch.complained,
        suppressed=batch.suppressed,
        rejected=batch.rejected,
        duplicates=batch.duplicates,
        cancelled=batch.cancelled,
        scheduled_at=batch.scheduled_at,
        error=batch.error,
        created_at=batch.created_at,
        started_at=batch.started_at,
        updated_at=batch.updated_at,
        finished_at=batch.finished_at,
        rate_per_minute=batches.rate_per_minute(batch),
    )


def _batch_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BatchNotFound(
            "no such batch for this client", details=[{"batch_id": value[:64]}]
        ) from None


def batch_routes(services: ServicesProvider) -> Router:
    router = Router()

    @router.post(
        "/v1/batches",
        status_code=202,
        summary="Send one content to many recipients, each with its own props",
        description=(
            f"Up to {MAX_INLINE_RECIPIENTS:,} recipients inline; more through "
            '`"recipients_upload": true` (an NDJSON or CSV file, then /start). The content is '
            "what POST /v1/send takes, without to/cc/bcc. Bad addresses, suppressed and "
            "duplicate recipients are recorded per recipient, never failing the batch. With "
            "`scheduled_at` (RFC 3339 with an offset, at most 30 days ahead) the batch waits "
            "as `scheduled` and is planned and sent at that time (an upload still needs "
            "/start before it); cancel stops it until then. A time already past sends now, "
            "and the answer says so."
        ),
        responses=answers(
            202,
            "Accepted (inline), or waiting for its upload",
            BatchAccepted,
            errors={
                422: (
                    "validation_error (over 10,000 recipients, recipients and an upload, to/cc/"
                    "bcc given, scheduled_at without an offset or over 30 days ahead), "
                    "header_injection, unknown_template, subject_too_long, unknown_queue, "
                    "unknown_smtp_config"
                ),
                409: "queue_draining: the named queue takes no new mail",
                429: (
                    "rate_limited; quota_exceeded or daily_limit_exceeded: the inline "
                    "recipients do not fit in what is left of the quota (nothing written); "
                    "Retry-After says when to try again"
                ),
                503: "enqueue_failed: the planner queue refused the batch; it reads failed",
                403: SENDING_PAUSED,
            },
        ),
        tags=["batches"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def create_batch(request: Annotated[BatchRequest, Body()]) -> Response[str]:
        active = services()
        caller = caller_of(router, active, Scope.EMAIL_SEND)
        refuse_if_paused(caller.client, live=caller.mode is KeyKind.LIVE)
        trace_id = trace_id_of(router.current_event.headers)
        logger.append_keys(trace_id=trace_id)
        accepted = batches.accept_batch(
            active.uow(),
            active.templates,
            active.planner_queue,
            active.recipient_files,
            active.batch_limits,
            client=caller.client,
            request=request,
            trace_id=trace_id,
            mode=caller.mode,
            contents=active.inline_contents,
            check_sender=sending.sender_check(
                sender_check_for(active, caller.mode), active.uow(), caller.client
            ),
            now=active.clock.now(),
            # Every inline recipient counts as a send would (issue 17); test mode never.
            quota=BatchQuotaCharge(active.quota, active.uow, caller.client)
            if caller.mode is KeyKind.LIVE
            else None,
            resolve_relay=relay_resolver(active.uow(), caller.client.id),
        )
        batch = accepted.batch
        logger.info("batch accepted", extra={"batch_id": str(batch.id), "total": batch.total})
        body = BatchAccepted(
            id=batch.id,
            status=batch.status.value,
            total=batch.total,
            scheduled_at=batch.scheduled_at,
            note=_accepted_note(accepted),
            upload_url=accepted.upload_url,
            upload_expires_at=accepted.upload_expires_at,
        )
        return Response(
            status_code=202,
            content_type=content_types.APPLICATION_JSON,
            body=body.model_dump_json(),
            headers={"X-Trace-Id": trace_id},
        )

    @router.post(
        "/v1/batches/<batch_id>/start",
        summary="Start an uploaded batch: its file is read from here on",
        description=(
            "The file is copied and checked now; a batch with scheduled_at still ahead then "
            "waits as `scheduled` and is planned at its time."
        ),
        responses=answers(
            200,
            "Started",
            BatchView,
            errors={
                **_NOT_FOUND,
                409: (
                    "batch_state_conflict: started already, or not an upload; upload_missing: "
                    "nothing was uploaded yet"
                ),
                413: f"upload_too_large: the file is over {MAX_UPLOAD_BYTES} bytes",
                422: "no_email_column: the CSV header names no email column",
            },
        ),
        tags=["batches"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def start_batch(batch_id: Annotated[str, Path()]) -> BatchView:
        active = services()
        client = caller_of(router, active, Scope.EMAIL_SEND).client
        batch = batches.start_batch(
            active.uow(),
            active.planner_queue,
            active.recipient_files,
            client_id=client.id,
            batch_id=_batch_id(batch_id),
            now=active.clock.now(),
            lookahead_seconds=active.settings.scheduler_lookahead_seconds,
        )
        return batch_view(batch)

    @router.get(
        "/v1/batches/<batch_id>",
        summary="A batch's progress, counted from its messages' outcomes",
        responses=answers(200, "The batch", BatchView, errors=_NOT_FOUND),
        tags=["batches"],
        security=client_key(Scope.EMAIL_READ),
    )
    def get_batch(batch_id: Annotated[str, Path()]) -> BatchView:
        active = services()
        client = caller_of(router, active, Scope.EMAIL_READ).client
        return batch_view(
            batches.get_batch(active.uow(), client_id=client.id, batch_id=_batch_id(batch_id))
        )

    @router.patch(
        "/v1/batches/<batch_id>",
        summary="Move a scheduled batch to another time",
        description=(
            "Only while the batch is `scheduled`: the same rules as `scheduled_at` on create "
            "(an offset, at most 30 days ahead; a time already past plans it now, with a "
            "note). Once planning has begun (or for a batch never scheduled): 409 "
            "not_scheduled. The batch is planned once, at its new time."
        ),
        responses=answers(
            200,
            "Rescheduled",
            RescheduledBatchView,
            errors={
                **_NOT_FOUND,
                409: "not_scheduled: planning has begun, or the batch is not scheduled",
                422: "validation_error: scheduled_at without an offset or over 30 days ahead",
            },
        ),
        tags=["batches"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def reschedule_batch(
        batch_id: Annotated[str, Path()],
        request: Annotated[RescheduleBatchRequest, Body()],
    ) -> RescheduledBatchView:
        active = services()
        client = caller_of(router, active, Scope.EMAIL_SEND).client
        moved = scheduled_batches.reschedule_batch(
            active.uow(),
            active.planner_queue,
            client_id=client.id,
            batch_id=_batch_id(batch_id),
            scheduled_at=request.scheduled_at,
            now=active.clock.now(),
            lookahead_seconds=active.settings.scheduler_lookahead_seconds,
        )
        logger.info("batch rescheduled", extra={"batch_id": str(moved.batch.id)})
        return RescheduledBatchView(
            **batch_view(moved.batch).model_dump(),
            note=PAST_BATCH_NOTE if moved.in_past else None,
        )

    @router.get(
        "/v1/batches/<batch_id>/recipients",
        summary="Each recipient's outcome with its reason, in batch order",
        responses=answers(
            200,
            "One page",
            RecipientPage,
            errors={**_NOT_FOUND, 422: "validation_error: a bad status or cursor"},
        ),
        tags=["batches"],
        security=client_key(Scope.EMAIL_READ),
    )
    def list_recipients(
        batch_id: Annotated[str, Path()],
        status: Annotated[RecipientState | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]{1,10}$")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> RecipientPage:
        active = services()
        client = caller_of(router, active, Scope.EMAIL_READ).client
        after = min(int(cursor), 2**31 - 1) if cursor is not None else -1
        outcomes = batches.recipient_outcomes(
            active.uow(),
            client_id=client.id,
            batch_id=_batch_id(batch_id),
            statuses=[status] if status else None,
            after=after,
            limit=limit,
        )
        return RecipientPage(
            recipients=[
                RecipientOutcomeView(
                    index=o.index,
                    line=o.line,
                    address=o.address,
                    status=o.status,
                    reason=o.reason,
                    message_id=o.message_id,
                )
                for o in outcomes
            ],
            next_cursor=str(outcomes[-1].index) if len(outcomes) == limit else None,
        )

    @router.post(
        "/v1/batches/<batch_id>/cancel",
        summary="Stop every message of the batch not yet sent",
        description=(
            "Messages a worker has already claimed finish; no other message of the batch is "
            "sent after this answers. A scheduled batch is never planned. 409 once the batch "
            "is finished, cancelled or failed."
        ),
        responses=answers(
            200,
            "Cancelled",
            BatchView,
            errors={**_NOT_FOUND, 409: "batch_state_conflict: the batch is over already"},
        ),
        tags=["batches"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def cancel_batch(batch_id: Annotated[str, Path()]) -> BatchView:
        active = services()
        client = caller_of(router, active, Scope.EMAIL_SEND).client
        batch = batches.cancel_batch(
            active.uow(),
            client_id=client.id,
            batch_id=_batch_id(batch_id),
            quota=BatchQuotaCharge(active.quota, active.uow, client),
        )
        logger.info("batch cancelled", extra={"batch_id": str(batch.id)})
        return batch_view(batch)

    @router.post(
        "/v1/batches/<batch_id>/retry-failed",
        summary="Send again the batch's messages that failed transiently",
        description=(
            "Only messages whose retries ran out (a provider outage) or that the queue refused; "
            "permanent refusals, bad addresses, suppressed and duplicate recipients are not."
        ),
        responses=answers(
            200,
            "How many were queued again",
            RetryAnswer,
            errors={
                **_NOT_FOUND,
                409: "batch_state_conflict: cancelled, failed, scheduled, or still being planned",
            },
        ),
        tags=["batches"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def retry_failed(batch_id: Annotated[str, Path()]) -> RetryAnswer:
        active = services()
        client = caller_of(router, active, Scope.EMAIL_SEND).client
        target = _batch_id(batch_id)
        retried = batches.retry_failed(
            active.uow(), active.queue, client_id=client.id, batch_id=target
        )
        batch = batches.get_batch(active.uow(), client_id=client.id, batch_id=target)
        return RetryAnswer(retried=retried, batch=batch_view(batch))

    return router
