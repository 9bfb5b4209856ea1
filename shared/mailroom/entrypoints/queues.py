"""/v1/queues (issue 20, scope ``queue:manage``): a client's named queues.

Create, list, get, update, delete; pause, resume and drain; statistics. The
sending side (a send's ``"queue"``) and the worker's claim gate are in
services/queues.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from mailroom.bootstrap import Services
from mailroom.domain.commands import TrackingRequest
from mailroom.domain.queues import (
    EXAMPLE_RETRY_DELAYS,
    MAX_PRIORITY,
    MAX_RETRIES,
    MAX_RETRY_DELAY_SECONDS,
    MAX_RETRY_DELAYS,
    MIN_PRIORITY,
    QUEUE_NAME_PATTERN,
    Band,
    Queue,
    QueueState,
)
from mailroom.domain.tenancy import Scope
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.services import queues
from mailroom.services.clients import check_provider_order

ServicesProvider = Callable[[], Services]
SECURITY = client_key(Scope.QUEUE_MANAGE)
TAGS = ["queues"]
QUEUE_ID = Path(max_length=64, description="The queue's id (a UUID).")
NOT_FOUND = {404: "queue_not_found: no such queue of this client"}

Priority = Annotated[int, Field(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
# Configured providers' names (PROVIDER_ORDER's); checked against them on write.
ProviderOrder = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=32)]],
    Field(min_length=1, max_length=8, examples=[["smtp", "ses"]]),
]
Delays = Annotated[
    list[Annotated[int, Field(ge=1, le=MAX_RETRY_DELAY_SECONDS)]],
    Field(
        max_length=MAX_RETRY_DELAYS,
        description=(
            f"Seconds before each retry, strictly increasing, each at most "
            f"{MAX_RETRY_DELAY_SECONDS} (SQS's 12 h visibility limit); the last one repeats."
        ),
        min_length=1,
        examples=[list(EXAMPLE_RETRY_DELAYS)],
    ),
]


class QueueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=QUEUE_NAME_PATTERN, examples=["newsletter"])
    priority: Priority = Field(
        default=5, description="1-10; 8-10 travel on the high band, 4-7 normal, 1-3 low."
    )
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Sends per minute; null: no limit."
    )
    max_retries: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RETRIES,
        description="Retries after the first attempt; null: the service's MAX_SEND_ATTEMPTS.",
    )
    retry_delays: Delays | None = Field(
        default=None, description="null: the service's exponential backoff."
    )
    bulk: bool = Field(
        default=False,
        description="Its one-recipient mail carries RFC 8058 one-click unsubscribe.",
    )
    smtp_config_id: uuid.UUID | None = Field(
        default=None,
        description="The client's SMTP configuration (/v1/smtp-configs) its mail goes out "
        "through, unless a send names its own `smtp_config`: the send's, then the queue's, "
        "then the client's default relay. Applied when a message is accepted.",
    )
    provider_order: ProviderOrder | None = Field(
        default=None,
        description="The providers its mail tries, in order, instead of the client's order "
        "(names of the service's configured providers); null: the client's.",
    )
    tracking: TrackingRequest | None = Field(
        default=None,
        description="Open and click tracking for its mail (issue 21), under its template's "
        "default and a send's own `tracking`, each key overriding both ways; null: none.",
    )


class QueueUpdate(BaseModel):
    """The fields to change; the state changes through pause, resume and drain."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=QUEUE_NAME_PATTERN)
    priority: Priority | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    retry_delays: Delays | None = None
    bulk: bool | None = None
    smtp_config_id: uuid.UUID | None = None
    provider_order: ProviderOrder | None = None
    tracking: TrackingRequest | None = None


class QueueView(BaseModel):
    id: uuid.UUID
    name: str
    priority: int
    band: Band
    rate_limit_per_minute: int | None
    max_retries: int | None
    retry_delays: list[int] | None
    bulk: bool
    state: QueueState
    smtp_config_id: uuid.UUID | None
    provider_order: list[str] | None
    tracking: dict[str, bool] | None = Field(description="null: no tracking default")
    created_at: datetime | None
    updated_at: datetime | None


class QueuePage(BaseModel):
    queues: list[QueueView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class QueueStateChange(BaseModel):
    queue: QueueView
    released: int = Field(
        description="Held messages put back on the queue by this call: the oldest page "
        "(QUEUE_RELEASE_PAGE_SIZE, 1,000 by default)."
    )
    releasing: bool = Field(
        description="More held mail is left: the scheduler's next passes release it, "
        "oldest first, a page at a time (within a minute or two for 100,000)."
    )


class QueueDeleted(BaseModel):
    deleted: bool
    unsent: int = Field(
        description="Unsent messages it held; with drain=true they are still sent, "
        "through the client's default queue."
    )


class QueueStatsView(BaseModel):
    queue_id: uuid.UUID
    state: QueueState
    depth: dict[str, int] = Field(description="Unsent messages by status: queued, sending, held")
    oldest_message_age_seconds: float | None
    sent_last_hour: int
    sent_last_day: int
    failed_last_hour: int
    failed_last_day: int
    current_rate_per_minute: int = Field(description="Messages sent in the last minute.")


def queue_view(queue: Queue) -> QueueView:
    return QueueView(
        id=queue.id,
        name=queue.name,
        priority=queue.priority,
        band=queue.band,
        rate_limit_per_minute=queue.rate_limit_per_minute,
        max_retries=queue.max_retries,
        retry_delays=None if queue.retry_delays is None else list(queue.retry_delays),
        bulk=queue.bulk,
        state=queue.state,
        smtp_config_id=queue.smtp_config_id,
        provider_order=queue.provider_order,
        tracking=None if queue.tracking is None else dict(queue.tracking),
        created_at=queue.created_at,
        updated_at=queue.updated_at,
    )


def _checked_order(active: Services, order: list[str] | None) -> list[str] | None:
    """422 unless every name is a configured provider, once each (as a client's order)."""
    check_provider_order(order, active.settings.provider_names)
    return order


def queue_routes(services: ServicesProvider) -> Router:
    # Imported here: api.py imports the send and status routes at cold start.
    from mailroom.entrypoints.api import caller_of

    router = Router()

    def client_id(active: Services) -> uuid.UUID:
        return caller_of(router, active, Scope.QUEUE_MANAGE).client.id

    @router.post(
        "/v1/queues",
        status_code=201,
        summary="Create a queue",
        responses=answers(
            201,
            "Created",
            QueueView,
            errors={
                409: "queue_name_taken: the client has a queue of that name",
                422: "validation_error: priority outside 1-10, retry delays not increasing "
                "or over the maximum, a bad name; unknown_smtp_config: smtp_config_id is not "
                "one of the client's SMTP configurations",
            },
        ),
        tags=TAGS,
        security=SECURITY,
    )
    def create_queue(body: Annotated[QueueCreate, Body()]) -> Response[str]:
        active = services()
        created = queues.create_queue(
            active.uow(),
            Queue(
                id=uuid.uuid4(),
                client_id=client_id(active),
                name=body.name,
                priority=body.priority,
                rate_limit_per_minute=body.rate_limit_per_minute,
                max_retries=body.max_retries,
                retry_delays=None if body.retry_delays is None else list(body.retry_delays),
                bulk=body.bulk,
                smtp_config_id=body.smtp_config_id,
                provider_order=_checked_order(active, body.provider_order),
                tracking=None if body.tracking is None else (body.tracking.as_pairs() or None),
            ),
        )
        logger.info("queue created", extra={"queue_id": str(created.id)})
        return Response(
            status_code=201,
            content_type=content_types.APPLICATION_JSON,
            body=queue_view(created).model_dump_json(),
        )

    @router.get(
        "/v1/queues",
        summary="The client's queues, by name",
        responses=answers(200, "One page", QueuePage),
        tags=TAGS,
        security=SECURITY,
    )
    def list_queues(
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=queues.MAX_PAGE)] = 50,
    ) -> QueuePage:
        active = services()
        page, next_cursor = queues.list_queues(active.uow(), client_id(active), cursor, limit)
        return QueuePage(queues=[queue_view(q) for q in page], next_cursor=next_cursor)

    @router.get(
        "/v1/queues/<queue_id>",
        summary="One queue",
        responses=answers(200, "The queue", QueueView, errors=NOT_FOUND),
        tags=TAGS,
        security=SECURITY,
    )
    def get_queue(queue_id: Annotated[str, QUEUE_ID]) -> QueueView:
        active = services()
        return queue_view(queues.get_queue(active.uow(), client_id(active), queue_id))

    @router.patch(
        "/v1/queues/<queue_id>",
        summary="Change a queue's settings",
        responses=answers(
            200,
            "Changed",
            QueueView,
            errors={
                **NOT_FOUND,
                409: "queue_name_taken",
                422: "validation_error: as for create",
            },
        ),
        tags=TAGS,
        security=SECURITY,
    )
    def update_queue(
        queue_id: Annotated[str, QUEUE_ID], body: Annotated[QueueUpdate, Body()]
    ) -> QueueView:
        active = services()
        changes = body.model_dump(exclude_unset=True)
        # null means "no limit" for the rate, and is not a value for the others.
        changes = {
            name: value
            for name, value in changes.items()
            if value is not None
            or name
            in (
                "rate_limit_per_minute",
                "smtp_config_id",
                "max_retries",
                "retry_delays",
                "provider_order",
                "tracking",
            )
        }
        if "tracking" in changes:
            given = body.tracking
            changes["tracking"] = None if given is None else (given.as_pairs() or None)
        if "provider_order" in changes:
            _checked_order(active, changes["provider_order"])
        updated = queues.update_queue(active.uow(), client_id(active), queue_id, changes)
        return queue_view(updated)

    @router.delete(
        "/v1/queues/<queue_id>",
        summary="Delete a queue (with unsent mail only with drain=true)",
        description=(
            "Refused with 409 queue_not_empty while the queue holds unsent mail, unless "
            "`drain=true`: then its held mail is released and everything it held is still "
            "sent, through the client's default queue. New sends naming it get 422."
        ),
        responses=answers(
            200,
            "Deleted",
            QueueDeleted,
            errors={**NOT_FOUND, 409: "queue_not_empty: pass drain=true"},
        ),
        tags=TAGS,
        security=SECURITY,
    )
    def delete_queue(
        queue_id: Annotated[str, QUEUE_ID], drain: Annotated[bool, Query()] = False
    ) -> QueueDeleted:
        active = services()
        unsent = queues.delete_queue(
            active.uow(),
            active.queue,
            client_id(active),
            queue_id,
            drain=drain,
            page_size=active.settings.queue_release_page_size,
        )
        logger.info("queue deleted", extra={"queue_id": queue_id, "unsent": unsent})
        return QueueDeleted(deleted=True, unsent=unsent)

    def state_route(action: str, state: QueueState, summary: str) -> None:
        @router.post(
            f"/v1/queues/<queue_id>/{action}",
            summary=summary,
            responses=answers(200, "Done", QueueStateChange, errors=NOT_FOUND),
            tags=TAGS,
            security=SECURITY,
        )
        def change(queue_id: Annotated[str, QUEUE_ID]) -> QueueStateChange:
            active = services()
            outcome = queues.set_state(
                active.uow(),
                active.queue,
                client_id(active),
                queue_id,
                state,
                page_size=active.settings.queue_release_page_size,
            )
            logger.info(
                f"queue {action}",
                extra={
                    "queue_id": queue_id,
                    "released": outcome.released,
                    "releasing": outcome.releasing,
                },
            )
            return QueueStateChange(
                queue=queue_view(outcome.queue),
                released=outcome.released,
                releasing=outcome.releasing,
            )

        change.__name__ = f"{action}_queue"

    state_route(
        "pause",
        QueueState.PAUSED,
        "Pause: new and queued mail is kept (status held), nothing is sent",
    )
    state_route("resume", QueueState.ACTIVE, "Resume: held mail is sent, oldest first")
    state_route(
        "drain",
        QueueState.DRAINING,
        "Drain: what the queue holds is sent; new mail is refused with 409 queue_draining",
    )

    @router.get(
        "/v1/queues/<queue_id>/stats",
        summary="Depth by status, oldest message age, sent and failed counts, current rate",
        responses=answers(200, "The figures", QueueStatsView, errors=NOT_FOUND),
        tags=TAGS,
        security=SECURITY,
    )
    def queue_stats(queue_id: Annotated[str, QUEUE_ID]) -> QueueStatsView:
        active = services()
        queue, stats = queues.queue_stats(active.uow(), client_id(active), queue_id)
        now = datetime.now(UTC)
        oldest = stats.oldest_unsent_at
        return QueueStatsView(
            queue_id=queue.id,
            state=queue.state,
            depth=stats.depth,
            oldest_message_age_seconds=None
            if oldest is None
            else round((now - oldest).total_seconds(), 3),
            sent_last_hour=stats.sent_last_hour,
            sent_last_day=stats.sent_last_day,
            failed_last_hour=stats.failed_last_hour,
            failed_last_day=stats.failed_last_day,
            current_rate_per_minute=stats.sent_last_minute,
        )

    return router
