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
from pydantic import BaseModel, Field

from mailroom.adapters.db.batches import Batch
from mailroom.bootstrap import Services
from mailroom.domain.batches import MAX_INLINE_RECIPIENTS, MAX_UPLOAD_BYTES, BatchRequest
from mailroom.domain.errors import BatchNotFound
from mailroom.domain.tenancy import KeyKind, Scope
from mailroom.entrypoints.api import caller_of, sender_check_for, trace_id_of
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.services import batches, sending
from mailroom.services.quotas import BatchQuotaCharge

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
    status: str = Field(description="accepted; awaiting_upload for an upload")
    total: int | None = Field(description="Recipients listed; null until an upload is planned")
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
        description="awaiting_upload, accepted, planning, sending, finished, cancelled, failed"
    )
    total: int | None = Field(
        description="Recipients in the batch; null until an upload is planned"
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
            "duplicate recipients are recorded per recipient, never failing the batch."
        ),
        responses=answers(
            202,
            "Accepted (inline), or waiting for its upload",
            BatchAccepted,
            errors={
                422: (
                    "validation_error (over 10,000 recipients, recipients and an upload, to/cc/"
                    "bcc given), header_injection, unknown_template, subject_too_long"
                ),
                429: (
                    "rate_limited; quota_exceeded or daily_limit_exceeded: the inline "
                    "recipients do not fit in what is left of the quota (nothing written); "
                    "Retry-After says when to try again"
                ),
                503: "enqueue_failed: the planner queue refused the batch; it reads failed",
            },
        ),
        tags=["batches"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def create_batch(request: Annotated[BatchRequest, Body()]) -> Response[str]:
        active = services()
        caller = caller_of(router, active, Scope.EMAIL_SEND)
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
            # Every inline recipient counts as a send would (issue 17); test mode never.
            quota=BatchQuotaCharge(active.quota, active.uow, caller.client)
            if caller.mode is KeyKind.LIVE
            else None,
        )
        batch = accepted.batch
        logger.info("batch accepted", extra={"batch_id": str(batch.id), "total": batch.total})
        body = BatchAccepted(
            id=batch.id,
            status=batch.status.value,
            total=batch.total,
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
            "sent after this answers. 409 once the batch is finished, cancelled or failed."
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
                409: "batch_state_conflict: cancelled, failed, or still being planned",
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
