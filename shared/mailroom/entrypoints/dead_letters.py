"""Admin routes for the dead-letter queue: list, redrive one or all, purge with confirmation."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, Field

from mailroom.bootstrap import Services
from mailroom.domain.errors import DeadLetterNotFound
from mailroom.domain.queues import Band
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers
from mailroom.services import dead_letters

ServicesProvider = Callable[[], Services]


class DeadLetterItem(BaseModel):
    sqs_message_id: str
    message_id: uuid.UUID | None = Field(description="None when the record's body is unreadable.")
    status: str | None = Field(description="The message row's status; None without a row.")
    attempts: int | None
    last_error: str | None
    reason: str | None = Field(description="Why the worker moved it; None if SQS moved it.")
    sent_at: datetime | None


class DeadLetterList(BaseModel):
    queue: str
    band: Band = Field(description="The priority band whose DLQ this is.")
    approximate_total: int
    messages: list[DeadLetterItem]
    bands: dict[str, int | None] = Field(
        description="Every band's DLQ's approximate size (high, normal, low); null where "
        "that DLQ is not configured or not answering."
    )


class RedriveResult(BaseModel):
    redriven: list[uuid.UUID] = Field(description="Set back to queued and re-enqueued.")
    already_sent: list[uuid.UUID] = Field(description="Removed from the DLQ, not sent again.")
    skipped: list[dict[str, str]] = Field(description="Left in the DLQ, with why.")
    remaining: int = Field(description="Approximately what the DLQ still holds.")


class PurgeRequest(BaseModel):
    confirm: str | None = Field(default=None, description="The dead-letter queue's name.")


class PurgeResult(BaseModel):
    purged: int
    marked_failed: int = Field(description="Rows still queued, now failed with the reason.")
    remaining: int


# Issue 20: each priority band's send queue has its own redrive DLQ; the
# normal band's is also where the worker moves exhausted messages.
BAND = Query(
    description="Which priority band's dead-letter queue: normal (the default, where the "
    "worker moves messages whose retries ran out), high or low (records SQS moved there "
    "from those bands' send queues)."
)

_DLQ_DOWN = {
    503: "dead_letter_queue_unavailable, service_unavailable: not configured or not answering"
}


def dead_letter_routes(services: ServicesProvider) -> Router:
    # admin.py lists this router among its own, so its helpers come in here.
    from mailroom.entrypoints.admin import ADMIN_SECURITY, require_admin

    router = Router()

    @router.get(
        "/admin/dlq",
        summary="What the dead-letter queue holds",
        description=(
            "Each record with the message's id, status and last error. Reading makes the "
            "records invisible for a moment, then visible again."
        ),
        responses=answers(200, "The records", errors=_DLQ_DOWN),
        tags=["dead-letter queue"],
        security=ADMIN_SECURITY,
    )
    def list_dlq(
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        band: Annotated[Band, BAND] = Band.NORMAL,
    ) -> DeadLetterList:
        active = services()
        require_admin(router, active)
        listing = dead_letters.list_dead_letters(
            active.uow(), active.dead_letters_of(band), limit=limit
        )
        return DeadLetterList(
            queue=listing.queue,
            band=band,
            approximate_total=listing.approximate_total,
            messages=[
                DeadLetterItem.model_validate(v, from_attributes=True) for v in listing.messages
            ],
            bands=dead_letters.band_totals(active.dead_letters_of),
        )

    @router.post(
        "/admin/dlq/redrive",
        summary="Send every message in the dead-letter queue back to the send queue",
        description="Each row is set back to queued with a fresh attempt budget, then enqueued.",
        responses=answers(200, "What was redriven, and what was not", errors=_DLQ_DOWN),
        tags=["dead-letter queue"],
        security=ADMIN_SECURITY,
    )
    def redrive_all(band: Annotated[Band, BAND] = Band.NORMAL) -> RedriveResult:
        active = services()
        actor = require_admin(router, active)
        report = dead_letters.redrive(
            active.uow(), active.dead_letters_of(band), active.queue, actor=actor, band=band
        )
        logger.info("dead-letter queue redriven", extra={"redriven": len(report.redriven)})
        return _redrive_result(report)

    @router.post(
        "/admin/dlq/<message_id>/redrive",
        summary="Send one message back from the dead-letter queue",
        responses=answers(
            200,
            "What was redriven",
            errors={
                **_DLQ_DOWN,
                404: "dead_letter_not_found: no record of that message in the dead-letter queue",
            },
        ),
        tags=["dead-letter queue"],
        security=ADMIN_SECURITY,
    )
    def redrive_one(
        message_id: Annotated[str, Path()], band: Annotated[Band, BAND] = Band.NORMAL
    ) -> RedriveResult:
        active = services()
        actor = require_admin(router, active)
        try:
            wanted = uuid.UUID(message_id)
        except ValueError:
            raise DeadLetterNotFound(f"'{message_id}' is not a message id") from None
        report = dead_letters.redrive(
            active.uow(),
            active.dead_letters_of(band),
            active.queue,
            message_id=wanted,
            actor=actor,
            band=band,
        )
        logger.info("dead letter redriven", extra={"message_id": message_id})
        return _redrive_result(report)

    @router.post(
        "/admin/dlq/purge",
        summary="Delete everything in the dead-letter queue",
        description=(
            "Asks for the queue's name as confirmation (422 confirmation_required otherwise). "
            "Rows still queued are marked failed."
        ),
        responses=answers(
            200,
            "What was purged",
            errors={
                **_DLQ_DOWN,
                422: "confirmation_required: `confirm` is not the dead-letter queue's name",
            },
        ),
        tags=["dead-letter queue"],
        security=ADMIN_SECURITY,
    )
    def purge(
        request: Annotated[PurgeRequest, Body()], band: Annotated[Band, BAND] = Band.NORMAL
    ) -> PurgeResult:
        active = services()
        actor = require_admin(router, active)
        report = dead_letters.purge(
            active.uow(), active.dead_letters_of(band), confirm=request.confirm, actor=actor
        )
        logger.warning("dead-letter queue purged", extra={"purged": report.purged})
        return PurgeResult(
            purged=report.purged, marked_failed=report.marked_failed, remaining=report.remaining
        )

    return router


def _redrive_result(report: dead_letters.RedriveReport) -> RedriveResult:
    return RedriveResult(
        redriven=report.redriven,
        already_sent=report.already_sent,
        skipped=report.skipped,
        remaining=report.remaining,
    )
