"""/v1/webhooks (scope ``webhook:manage``) and /v1/events (scope ``email:read``): issue 19.

A signing secret appears in exactly two answers, creation and rotation;
listings never show it. Another client's endpoint answers 404 like one that
does not exist. Operators reach the same operations under
/admin/clients/{client_ref}/webhooks.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mailroom.adapters.db.outbound_webhooks import AttemptRecord
from mailroom.bootstrap import Services
from mailroom.domain.outbound_webhooks import (
    MAX_DESCRIPTION_LENGTH,
    MAX_ENDPOINTS_PER_CLIENT,
    MAX_URL_LENGTH,
    SUBSCRIBABLE_TYPES,
    Endpoint,
    event_id,
    public_type,
)
from mailroom.domain.tenancy import Actor, Scope
from mailroom.entrypoints.client_gate import source_ip_of
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.services import clients
from mailroom.services import outbound_webhooks as webhooks

ServicesProvider = Callable[[], Services]
TAGS = ["webhooks"]
ADMIN_TAGS = ["admin: clients"]
SECURITY = client_key(Scope.WEBHOOK_MANAGE)
WEBHOOK_ID = Path(max_length=64, description="The endpoint's id.")
DELIVERY_ID = Path(description="A delivery id from the delivery log.")
EventName = Annotated[str, Field(max_length=64)]
TYPES_DESCRIPTION = "Event types: " + ", ".join(SUBSCRIBABLE_TYPES) + ". Omit or null: all."
OPENS_DESCRIPTION = (
    "Of email.opened, `all` (every open, machine ones flagged `machine: true`) or `first` "
    "(only each message's first human open, `first_open: true`)."
)
Opens = Literal["all", "first"]


class CreateWebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="HTTPS, a public host, no credentials.",
    )
    events: list[EventName] | None = Field(
        default=None, max_length=len(SUBSCRIBABLE_TYPES), description=TYPES_DESCRIPTION
    )
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)
    opens: Opens = Field(default="all", description=OPENS_DESCRIPTION)


class UpdateWebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    events: list[EventName] | None = Field(
        default=None, max_length=len(SUBSCRIBABLE_TYPES), description=TYPES_DESCRIPTION
    )
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)
    enabled: bool | None = Field(
        default=None, description="true re-enables a disabled endpoint; false pauses it."
    )
    opens: Opens | None = Field(default=None, description=OPENS_DESCRIPTION)


class RotateWebhookSecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int | None = Field(
        default=None,
        ge=0,
        le=7 * 86_400,
        description="How long the old secret keeps signing beside the new one; default 24 h.",
    )


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime = Field(description="Events at or after this time...")
    end: AwareDatetime = Field(description="...and before this one.")


class WebhookView(BaseModel):
    id: uuid.UUID
    url: str
    description: str | None
    events: list[str] | None = Field(description="null: every type")
    opens: str = Field(description=OPENS_DESCRIPTION)
    status: str = Field(description="enabled or disabled")
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None = Field(
        description="First failure since the last success; 5 days of it disables the endpoint."
    )
    previous_secret_expires_at: datetime | None = Field(
        description="Until then deliveries are signed with the old secret too."
    )
    created_at: datetime | None
    updated_at: datetime | None


class CreatedWebhookView(WebhookView):
    secret: str = Field(description="whsec_…: shown this once. Verify webhook-signature with it.")


class WebhookList(BaseModel):
    webhooks: list[WebhookView]
    max_webhooks: int = MAX_ENDPOINTS_PER_CLIENT


class AttemptView(BaseModel):
    id: int
    delivery_id: int
    webhook_id: str = Field(description="The event's id: the webhook-id header.")
    event_type: str
    delivery_status: str = Field(description="pending, succeeded, failed or skipped")
    at: datetime
    status_code: int | None = Field(description="null: no HTTP answer (timeout, refused...)")
    response: str = Field(description="The first 4 KB of the answer")
    error: str | None
    latency_ms: int
    next_attempt_at: datetime | None


class AttemptList(BaseModel):
    attempts: list[AttemptView] = Field(description="Newest first")
    next_before: int | None = Field(description="Pass as ?before= for older attempts")


class TestSent(BaseModel):
    webhook_id: str
    delivery_id: int


class RetryQueued(BaseModel):
    delivery_id: int = Field(description="The new delivery (same event, same webhook-id)")


class Replayed(BaseModel):
    deliveries: int


class FeedEvent(BaseModel):
    id: str = Field(description="The webhook-id the same event is delivered with")
    type: str
    timestamp: str
    data: dict[str, Any]


class EventFeed(BaseModel):
    data: list[FeedEvent] = Field(description="Oldest first")
    next_cursor: str = Field(description="Pass as ?after= for the events that follow")


def webhook_view(endpoint: Endpoint) -> WebhookView:
    return WebhookView(
        id=endpoint.id,
        url=endpoint.url,
        description=endpoint.description,
        events=endpoint.event_types,
        opens=endpoint.opens,
        status="enabled" if endpoint.enabled else "disabled",
        disabled_reason=endpoint.disabled_reason,
        disabled_at=endpoint.disabled_at,
        failing_since=endpoint.failing_since,
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def _with_secret(created: webhooks.CreatedEndpoint, status_code: int) -> Response[str]:
    view = CreatedWebhookView(**webhook_view(created.endpoint).model_dump(), secret=created.secret)
    return Response(
        status_code=status_code,
        content_type=content_types.APPLICATION_JSON,
        body=view.model_dump_json(),
        headers={"Cache-Control": "no-store"},
    )


def _attempt_view(record: AttemptRecord) -> AttemptView:
    return AttemptView(
        id=record.id,
        delivery_id=record.delivery_id,
        webhook_id=event_id(record.event_id),
        event_type=public_type(record.event_type) or record.event_type,
        delivery_status=record.delivery_status,
        at=record.at,
        status_code=record.status_code,
        response=record.response_excerpt,
        error=record.error,
        latency_ms=record.latency_ms,
        next_attempt_at=record.next_attempt_at,
    )


_NOT_FOUND = {404: "webhook_not_found: no such endpoint for this client"}
_RETRY_ERRORS = {
    404: "webhook_not_found, webhook_delivery_not_found",
    422: "validation_error: the endpoint is disabled",
}
_REPLAY_ERRORS = {
    **_NOT_FOUND,
    422: "validation_error: end before start, too many events, endpoint disabled",
}
_CREATE_ERRORS = {
    409: f"webhook_limit_reached: already {MAX_ENDPOINTS_PER_CLIENT} endpoints",
    422: "validation_error, invalid_webhook_url (not HTTPS, credentials, a private address), "
    "unknown_event_type",
    503: "secrets_not_configured: SECRETS_ENCRYPTION_KEYS is unset",
}


class _Operations:
    """What the /v1 and /admin routes share; they differ only in how the client is found."""

    def __init__(self, services: Services, client_id: uuid.UUID, actor: Actor) -> None:
        self.services = services
        self.client_id = client_id
        self.actor = actor

    @property
    def allow_private(self) -> bool:
        return self.services.settings.webhook_allow_private_urls

    def create(self, request: CreateWebhookRequest) -> Response[str]:
        created = webhooks.create_endpoint(
            self.services.uow(),
            self.services.settings.secret_keyring,
            self.client_id,
            url=request.url,
            events=request.events,
            description=request.description,
            allow_private=self.allow_private,
            actor=self.actor,
            opens=request.opens,
        )
        logger.info("webhook endpoint created", extra={"webhook_id": str(created.endpoint.id)})
        return _with_secret(created, 201)

    def list(self) -> WebhookList:
        endpoints = webhooks.list_endpoints(self.services.uow(), self.client_id)
        return WebhookList(webhooks=[webhook_view(e) for e in endpoints])

    def get(self, webhook_id: str) -> WebhookView:
        endpoint_id = webhooks.parse_endpoint_id(webhook_id)
        return webhook_view(webhooks.get_endpoint(self.services.uow(), self.client_id, endpoint_id))

    def update(self, webhook_id: str, request: UpdateWebhookRequest) -> WebhookView:
        endpoint_id = webhooks.parse_endpoint_id(webhook_id)
        given = request.model_fields_set
        changes: dict[str, Any] = {}
        if "events" in given:
            changes["events"] = request.events
        if "description" in given:
            changes["description"] = request.description
        endpoint = webhooks.update_endpoint(
            self.services.uow(),
            self.client_id,
            endpoint_id,
            url=request.url,
            enabled=request.enabled,
            opens=request.opens,
            allow_private=self.allow_private,
            actor=self.actor,
            **changes,
        )
        return webhook_view(endpoint)

    def delete(self, webhook_id: str) -> Response[str]:
        endpoint_id = webhooks.parse_endpoint_id(webhook_id)
        webhooks.delete_endpoint(self.services.uow(), self.client_id, endpoint_id, actor=self.actor)
        return Response(status_code=204, body="")

    def rotate(self, webhook_id: str, request: RotateWebhookSecretRequest | None) -> Response[str]:
        seconds = request.grace_seconds if request and request.grace_seconds is not None else 86_400
        created = webhooks.rotate_secret(
            self.services.uow(),
            self.services.settings.secret_keyring,
            self.client_id,
            webhooks.parse_endpoint_id(webhook_id),
            grace=timedelta(seconds=seconds),
            actor=self.actor,
        )
        return _with_secret(created, 200)

    def test(self, webhook_id: str) -> Response[str]:
        sent_id, delivery_id = webhooks.send_test(
            self.services.uow(),
            _queue(self.services),
            self.client_id,
            webhooks.parse_endpoint_id(webhook_id),
            actor=self.actor,
        )
        return _json(202, TestSent(webhook_id=sent_id, delivery_id=delivery_id))

    def retry(self, webhook_id: str, delivery_id: int) -> Response[str]:
        new_id = webhooks.retry_delivery(
            self.services.uow(),
            _queue(self.services),
            self.client_id,
            webhooks.parse_endpoint_id(webhook_id),
            delivery_id,
            actor=self.actor,
        )
        return _json(202, RetryQueued(delivery_id=new_id))

    def replay(self, webhook_id: str, request: ReplayRequest) -> Response[str]:
        count = webhooks.replay(
            self.services.uow(),
            _queue(self.services),
            self.client_id,
            webhooks.parse_endpoint_id(webhook_id),
            start=request.start.astimezone(UTC),
            end=request.end.astimezone(UTC),
            actor=self.actor,
        )
        return _json(202, Replayed(deliveries=count))

    def deliveries(self, webhook_id: str, before: int | None, limit: int) -> AttemptList:
        endpoint_id = webhooks.parse_endpoint_id(webhook_id)
        records = webhooks.list_attempts(
            self.services.uow(), self.client_id, endpoint_id, before=before, limit=limit
        )
        return AttemptList(
            attempts=[_attempt_view(r) for r in records],
            next_before=records[-1].id if len(records) == limit else None,
        )


def webhook_routes(services: ServicesProvider) -> Router:
    from mailroom.entrypoints.api import caller_of

    router = Router()

    def me(scope: Scope = Scope.WEBHOOK_MANAGE) -> _Operations:
        active = services()
        caller = caller_of(router, active, scope)
        source_ip = source_ip_of(router.current_event.raw_event)
        return _Operations(active, caller.client.id, Actor(f"key:{caller.key_id}", source_ip))

    @router.post(
        "/v1/webhooks",
        status_code=201,
        summary="Create a webhook endpoint",
        description=(
            "Answers the endpoint with its signing secret (whsec_…), shown once. Deliveries "
            "follow the Standard Webhooks specification. At most "
            f"{MAX_ENDPOINTS_PER_CLIENT} endpoints per client."
        ),
        responses=answers(
            201, "Created; the answer holds the secret", CreatedWebhookView, errors=_CREATE_ERRORS
        ),
        tags=TAGS,
        security=SECURITY,
    )
    def create(request: Annotated[CreateWebhookRequest, Body()]) -> Response[str]:
        return me().create(request)

    @router.get(
        "/v1/webhooks",
        summary="The client's webhook endpoints (never a secret)",
        responses=answers(200, "The endpoints", WebhookList),
        tags=TAGS,
        security=SECURITY,
    )
    def list_all() -> WebhookList:
        return me().list()

    @router.get(
        "/v1/webhooks/<webhook_id>",
        summary="One webhook endpoint",
        responses=answers(200, "The endpoint", WebhookView, errors=_NOT_FOUND),
        tags=TAGS,
        security=SECURITY,
    )
    def get_one(webhook_id: Annotated[str, WEBHOOK_ID]) -> WebhookView:
        return me().get(webhook_id)

    @router.patch(
        "/v1/webhooks/<webhook_id>",
        summary="Change a webhook endpoint's URL, types or description, or enable it again",
        responses=answers(
            200,
            "The endpoint",
            WebhookView,
            errors={**_NOT_FOUND, 422: "validation_error, invalid_webhook_url, unknown_event_type"},
        ),
        tags=TAGS,
        security=SECURITY,
    )
    def update(
        webhook_id: Annotated[str, WEBHOOK_ID],
        request: Annotated[UpdateWebhookRequest, Body()],
    ) -> WebhookView:
        return me().update(webhook_id, request)

    @router.delete(
        "/v1/webhooks/<webhook_id>",
        status_code=204,
        summary="Delete a webhook endpoint (its pending deliveries go with it)",
        responses=answers(204, "Deleted", {}, errors=_NOT_FOUND),
        tags=TAGS,
        security=SECURITY,
    )
    def delete(webhook_id: Annotated[str, WEBHOOK_ID]) -> Response[str]:
        return me().delete(webhook_id)

    @router.post(
        "/v1/webhooks/<webhook_id>/rotate-secret",
        summary="Give an endpoint a new signing secret",
        description=(
            "During the grace period every delivery carries two signatures in "
            "webhook-signature, one per secret, so receivers can switch at leisure."
        ),
        responses=answers(
            200,
            "The endpoint and its new secret, shown once",
            CreatedWebhookView,
            errors=_NOT_FOUND,
        ),
        tags=TAGS,
        security=SECURITY,
    )
    def rotate(
        webhook_id: Annotated[str, WEBHOOK_ID],
        request: Annotated[RotateWebhookSecretRequest | None, Body()] = None,
    ) -> Response[str]:
        return me().rotate(webhook_id, request)

    @router.post(
        "/v1/webhooks/<webhook_id>/test",
        status_code=202,
        summary="Send a webhook.test event to this endpoint",
        responses=answers(202, "Queued; see the delivery log", TestSent, errors=_NOT_FOUND),
        tags=TAGS,
        security=SECURITY,
    )
    def test(webhook_id: Annotated[str, WEBHOOK_ID]) -> Response[str]:
        return me().test(webhook_id)

    @router.get(
        "/v1/webhooks/<webhook_id>/deliveries",
        summary="The endpoint's delivery attempts, newest first",
        responses=answers(200, "Attempts", AttemptList, errors=_NOT_FOUND),
        tags=TAGS,
        security=SECURITY,
    )
    def deliveries(
        webhook_id: Annotated[str, WEBHOOK_ID],
        before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> AttemptList:
        return me().deliveries(webhook_id, before, limit)

    @router.post(
        "/v1/webhooks/<webhook_id>/deliveries/<delivery_id>/retry",
        status_code=202,
        summary="Send a delivery's event again now (same webhook-id)",
        responses=answers(
            202,
            "Queued",
            RetryQueued,
            errors=_RETRY_ERRORS,
        ),
        tags=TAGS,
        security=SECURITY,
    )
    def retry(
        webhook_id: Annotated[str, WEBHOOK_ID],
        delivery_id: Annotated[int, Path(ge=1, le=2**62)],
    ) -> Response[str]:
        return me().retry(webhook_id, delivery_id)

    @router.post(
        "/v1/webhooks/<webhook_id>/replay",
        status_code=202,
        summary="Send every event of a time range to this endpoint again",
        description=f"At most {webhooks.REPLAY_MAX_EVENTS} events per replay.",
        responses=answers(
            202,
            "Queued",
            Replayed,
            errors=_REPLAY_ERRORS,
        ),
        tags=TAGS,
        security=SECURITY,
    )
    def replay(
        webhook_id: Annotated[str, WEBHOOK_ID], request: Annotated[ReplayRequest, Body()]
    ) -> Response[str]:
        return me().replay(webhook_id, request)

    @router.get(
        "/v1/events",
        summary="The client's events in order, from a cursor: catch up without webhooks",
        description=(
            "The same objects webhooks deliver (plus their webhook-id as `id`), oldest "
            "first. Keep `next_cursor` and pass it as `after` next time."
        ),
        responses=answers(
            200,
            "One page",
            EventFeed,
            errors={422: "validation_error (a cursor we did not give), unknown_event_type"},
        ),
        tags=["events"],
        security=client_key(Scope.EMAIL_READ),
    )
    def events(
        after: Annotated[str | None, Query(max_length=20)] = None,
        types: Annotated[
            str | None, Query(max_length=1000, description="Comma-separated event types")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=webhooks.FEED_LIMIT_MAX)] = 100,
    ) -> EventFeed:
        ops = me(Scope.EMAIL_READ)
        wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
        page = webhooks.feed(
            ops.services.uow(), ops.client_id, after=after, types=wanted, limit=limit
        )
        return EventFeed(
            data=[FeedEvent(id=webhook_id, **body) for webhook_id, body in page.events],
            next_cursor=page.next_cursor,
        )

    return router


def _queue(services: Services) -> Any:
    assert services.webhook_queue is not None
    return services.webhook_queue


def _json(status_code: int, model: BaseModel) -> Response[str]:
    return Response(
        status_code=status_code,
        content_type=content_types.APPLICATION_JSON,
        body=model.model_dump_json(),
    )


def admin_webhook_routes(services: ServicesProvider) -> Router:
    """``/admin/clients/{client_ref}/webhooks``: operators see and manage a client's endpoints."""
    from mailroom.entrypoints.admin import ADMIN_SECURITY, require_admin

    router = Router()

    def admin(client_ref: str) -> _Operations:
        active = services()
        actor = require_admin(router, active)
        return _Operations(active, clients.find_client(active.uow(), client_ref).id, actor)

    client_missing = {404: "client_not_found"}

    @router.get(
        "/admin/clients/<client_ref>/webhooks",
        summary="A client's webhook endpoints",
        responses=answers(200, "The endpoints", WebhookList, errors=client_missing),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def list_all(client_ref: Annotated[str, Path()]) -> WebhookList:
        return admin(client_ref).list()

    @router.post(
        "/admin/clients/<client_ref>/webhooks",
        status_code=201,
        summary="Create a webhook endpoint for a client",
        responses=answers(
            201,
            "Created; the answer holds the secret",
            CreatedWebhookView,
            errors={**_CREATE_ERRORS, 404: "client_not_found"},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def create(
        client_ref: Annotated[str, Path()], request: Annotated[CreateWebhookRequest, Body()]
    ) -> Response[str]:
        return admin(client_ref).create(request)

    @router.patch(
        "/admin/clients/<client_ref>/webhooks/<webhook_id>",
        summary="Change, disable or re-enable a client's webhook endpoint",
        responses=answers(
            200, "The endpoint", WebhookView, errors={404: "client_not_found, webhook_not_found"}
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def update(
        client_ref: Annotated[str, Path()],
        webhook_id: Annotated[str, WEBHOOK_ID],
        request: Annotated[UpdateWebhookRequest, Body()],
    ) -> WebhookView:
        return admin(client_ref).update(webhook_id, request)

    @router.delete(
        "/admin/clients/<client_ref>/webhooks/<webhook_id>",
        status_code=204,
        summary="Delete a client's webhook endpoint",
        responses=answers(204, "Deleted", {}, errors={404: "client_not_found, webhook_not_found"}),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def delete(
        client_ref: Annotated[str, Path()], webhook_id: Annotated[str, WEBHOOK_ID]
    ) -> Response[str]:
        return admin(client_ref).delete(webhook_id)

    @router.post(
        "/admin/clients/<client_ref>/webhooks/<webhook_id>/rotate-secret",
        summary="Give a client's endpoint a new signing secret (the old one signs too for a while)",
        responses=answers(
            200,
            "The endpoint and its new secret, shown once",
            CreatedWebhookView,
            errors={404: "client_not_found, webhook_not_found"},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def rotate(
        client_ref: Annotated[str, Path()],
        webhook_id: Annotated[str, WEBHOOK_ID],
        request: Annotated[RotateWebhookSecretRequest | None, Body()] = None,
    ) -> Response[str]:
        return admin(client_ref).rotate(webhook_id, request)

    @router.get(
        "/admin/clients/<client_ref>/webhooks/<webhook_id>/deliveries",
        summary="A client's endpoint's delivery attempts, newest first",
        responses=answers(
            200, "Attempts", AttemptList, errors={404: "client_not_found, webhook_not_found"}
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def deliveries(
        client_ref: Annotated[str, Path()],
        webhook_id: Annotated[str, WEBHOOK_ID],
        before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> AttemptList:
        return admin(client_ref).deliveries(webhook_id, before, limit)

    @router.post(
        "/admin/clients/<client_ref>/webhooks/<webhook_id>/test",
        status_code=202,
        summary="Send a webhook.test event to a client's endpoint",
        responses=answers(
            202,
            "Queued; see the delivery log",
            TestSent,
            errors={404: "client_not_found, webhook_not_found"},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def test(
        client_ref: Annotated[str, Path()], webhook_id: Annotated[str, WEBHOOK_ID]
    ) -> Response[str]:
        return admin(client_ref).test(webhook_id)

    @router.post(
        "/admin/clients/<client_ref>/webhooks/<webhook_id>/deliveries/<delivery_id>/retry",
        status_code=202,
        summary="Send a delivery's event to a client's endpoint again now (same webhook-id)",
        responses=answers(
            202,
            "Queued",
            RetryQueued,
            errors={**_RETRY_ERRORS, 404: "client_not_found, " + _RETRY_ERRORS[404]},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def retry(
        client_ref: Annotated[str, Path()],
        webhook_id: Annotated[str, WEBHOOK_ID],
        delivery_id: Annotated[int, Path(ge=1, le=2**62)],
    ) -> Response[str]:
        return admin(client_ref).retry(webhook_id, delivery_id)

    @router.post(
        "/admin/clients/<client_ref>/webhooks/<webhook_id>/replay",
        status_code=202,
        summary="Send every event of a time range to a client's endpoint again",
        description=f"At most {webhooks.REPLAY_MAX_EVENTS} events per replay.",
        responses=answers(
            202,
            "Queued",
            Replayed,
            errors={**_REPLAY_ERRORS, 404: "client_not_found, webhook_not_found"},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def replay(
        client_ref: Annotated[str, Path()],
        webhook_id: Annotated[str, WEBHOOK_ID],
        request: Annotated[ReplayRequest, Body()],
    ) -> Response[str]:
        return admin(client_ref).replay(webhook_id, request)

    return router
