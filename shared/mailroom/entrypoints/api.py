"""The HTTP API: routes grouped by the Lambda function that serves them.

Routes are thin: read the event, call a service, shape the answer. Each
function's ``app.py`` builds its resolver with ``create_api`` and the route
groups it serves; the OpenAPI document is built from all groups at once.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from aws_lambda_powertools.event_handler import (
    APIGatewayRestResolver,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.models import (
    APIKey,
    APIKeyIn,
    HTTPBearer,
    OpenAPI,
    Server,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, WithJsonSchema

from mailroom.adapters import tracing
from mailroom.adapters.db.feedback_repositories import MessageFilter
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.metrics.base import Metrics
from mailroom.bootstrap import Services
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import InvalidRequest, MailroomError
from mailroom.domain.model import Client, Message, MessageStatus
from mailroom.domain.tenancy import Caller, KeyKind, Scope
from mailroom.entrypoints import client_gate
from mailroom.entrypoints.api_keys import api_key_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.health import health_answers, health_response
from mailroom.entrypoints.http_errors import (
    allowed_methods,
    install_error_handlers,
    method_not_allowed,
    proxy_error_response,
    routes_of,
)
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key, finish_document
from mailroom.entrypoints.request_body import TextBody, parse_json, prepare_event
from mailroom.entrypoints.status_views import (
    MODE_DESCRIPTION,
    EngagementView,
    MessageEventsView,
    MessagePageView,
    RecipientView,
    engagement_view,
    events_view,
    mode_of,
    page_view,
    recipient_views,
)
from mailroom.services import batch_send, idempotency, sending, status
from mailroom.services.admission import take_more
from mailroom.services.quotas import BatchQuotaCharge, QuotaCharge
from mailroom.services.reputation import SENDING_PAUSED, refuse_if_paused
from mailroom.services.smtp_configs import relay_resolver

if TYPE_CHECKING:
    from mailroom.services.sending_domains import VerifiedSenders

ServicesProvider = Callable[[], Services]

API_TITLE = "Mailroom"
API_VERSION = "0.1.0"
API_DESCRIPTION = (
    "Send transactional and bulk email from templates and see what became of every message. "
    "Authenticate with the X-Api-Key and X-Api-Secret headers, or with "
    "`Authorization: Bearer <token>` (the key id and secret in one string with a "
    "checksum). Each key holds scopes; a route needing one the key lacks answers 403 "
    "insufficient_scope. Every answer to an "
    "authenticated /v1/ request carries X-RateLimit-Limit (requests per minute), "
    "X-RateLimit-Remaining and X-RateLimit-Reset (seconds until the bucket is full) of "
    "the tightest of the global, client and key buckets. "
    'Every error answers `{"error": {"code", "message", "details"}}`.'
)
PAST_NOTE = "scheduled_at has passed: the message is sent now"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_AMZN_ROOT = re.compile(r"Root=([0-9A-Za-z-]{1,64})")


class Accepted(BaseModel):
    id: uuid.UUID
    status: MessageStatus
    mode: KeyKind = Field(
        default=KeyKind.LIVE,
        description="test: the message goes through everything but reaches no provider.",
    )
    render_warnings: list[str] = Field(
        default_factory=list,
        description=(
            'Inline content with "strict": false: the props it prints without a value '
            "or default, which render empty."
        ),
    )
    lint_warnings: list[str] = Field(
        default_factory=list,
        description=(
            "Inline content: what would make it worse in inboxes, as `code: message` "
            "(the template lint: no_text_part, image_without_alt, remote_stylesheet, script)."
        ),
    )
    # Issue 18; left out of the answer when the send was not scheduled.
    scheduled_at: datetime | None = Field(
        default=None, description="The time asked for, in UTC (only when one was given)."
    )
    note: str | None = Field(
        default=None, description="Set when scheduled_at had passed: the message is sent now."
    )


def accepted_body(
    message: Message,
    mode: KeyKind,
    render_warnings: Sequence[str] = (),
    lint_warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The 202 answer (and an idempotent replay's): scheduling fields only when scheduled."""
    answer = Accepted(
        id=message.id,
        status=message.status,
        mode=mode,
        render_warnings=list(render_warnings),
        lint_warnings=list(lint_warnings),
        scheduled_at=message.scheduled_at,
        note=PAST_NOTE
        if message.scheduled_at is not None and message.status is not MessageStatus.SCHEDULED
        else None,
    )
    return answer.model_dump(mode="json", exclude_none=True)


# Each item is read as JSON here and validated by the batch service, item by
# item, so that one bad item is reported by its index (permissive mode
# accepts the others); the document says what an item should be.
BatchItem = Annotated[dict[str, Any], WithJsonSchema({"$ref": "#/components/schemas/SendRequest"})]


class BatchItemAccepted(BaseModel):
    index: int = Field(description="The item's position in the request array, from 0.")
    id: uuid.UUID
    status: MessageStatus | None = None
    render_warnings: list[str] = Field(default_factory=list)
    lint_warnings: list[str] = Field(default_factory=list)
    replayed: bool = Field(
        default=False,
        description="true: the item's idempotency_key named a message accepted before.",
    )


class BatchItemError(BaseModel):
    index: int
    code: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class BatchAccepted(BaseModel):
    data: list[BatchItemAccepted]
    errors: list[BatchItemError]
    mode: KeyKind = KeyKind.LIVE


class EventView(BaseModel):
    type: str
    at: datetime
    detail: dict[str, Any]


class MessageView(BaseModel):
    id: uuid.UUID
    status: MessageStatus
    mode: KeyKind = Field(description=MODE_DESCRIPTION)
    template: str
    from_: str = Field(serialization_alias="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str | None
    provider: str | None
    provider_msg_id: str | None
    attempts: int
    last_error: str | None
    metadata: dict[str, Any]
    tags: list[str] = Field(default_factory=list)
    bulk: bool = False
    trace_id: str
    created_at: datetime | None
    updated_at: datetime | None
    sent_at: datetime | None
    events: list[EventView]
    recipients: list[RecipientView] = Field(
        default_factory=list, description="Each recipient's own outcome"
    )
    scheduled_at: datetime | None = Field(default=None, description="When it is due (UTC).")
    schedule_id: uuid.UUID | None = Field(
        default=None, description="The recurring schedule that sent it."
    )
    schedule_run_id: uuid.UUID | None = Field(default=None, description="That schedule's run.")
    engagement: EngagementView | None = Field(
        default=None,
        description="Opens and clicks, for a message sent with tracking (issue 21); else null",
    )


def trace_id_of(headers: Mapping[str, str]) -> str:
    """Continue the caller's trace (W3C traceparent or X-Ray header), or start one."""
    # Traced, the request's span already continued (or started) the trace.
    traced = tracing.current_trace_id()
    if traced is not None:
        return traced
    lowered = {key.lower(): value for key, value in headers.items()}
    match = _TRACEPARENT.match(lowered.get("traceparent", "").strip())
    if match:
        return match.group(1)
    amzn = _AMZN_ROOT.search(lowered.get("x-amzn-trace-id", ""))
    if amzn:
        return amzn.group(1)
    return uuid.uuid4().hex


def _authenticated(router: Router, services: Services, scope: Scope) -> Client:
    """The calling client, if its key holds ``scope`` (403 insufficient_scope otherwise)."""
    return caller_of(router, services, scope).client


def caller_of(router: Router, services: Services, scope: Scope) -> Caller:
    """The caller of a /v1 route: admitted once per invocation, by the gate or here."""
    # Powertools builds a new case-insensitive map on every ``.headers``.
    event = router.current_event
    return client_gate.admitted_caller(
        services,
        lambda: client_gate.presented(event.headers, client_gate.source_ip_of(event.raw_event)),
        scope,
    )


def sender_check_for(services: Services, mode: KeyKind) -> VerifiedSenders | None:
    """The From check SENDER_VERIFICATION asks for this caller's key mode, if any."""
    setting = services.settings.sender_verification
    if setting == "all" or (setting == "live" and mode is KeyKind.LIVE):
        return services.verified_senders
    return None


def send_routes(services: ServicesProvider) -> Router:
    router = Router()

    @router.post(
        "/v1/send",
        status_code=202,
        summary="Queue an email for sending",
        description=(
            "Answers 202 once the message is stored and queued. An optional "
            "`Idempotency-Key` header (kept 24 h per client) makes retries safe: the "
            "same key and body answer as the first request did. With `scheduled_at` the "
            "message is stored `scheduled` and sent at that time (cancel it with POST "
            "/v1/messages/{id}/cancel, move it with PATCH /v1/messages/{id})."
        ),
        responses=answers(
            202,
            "Queued",
            Accepted,
            errors={
                422: (
                    "Invalid request: validation_error, header_injection, unknown_template, "
                    "invalid_props, missing_prop, render_error, render_timeout; suppressed (every "
                    "addressee is on the suppression list; the row reads failed); "
                    "idempotency_key_reused (the key came with another body); "
                    "sender_not_verified (the from domain is not a verified sending domain "
                    "of this client; SENDER_VERIFICATION); scheduled_at without an offset "
                    "(naive_datetime) or over 30 days ahead; unknown_queue"
                ),
                409: (
                    "idempotency_in_progress: the key's first request is still in flight; "
                    "queue_draining: the named queue takes no new mail"
                ),
                429: "rate_limited or quota_exceeded; Retry-After says when to try again",
                503: (
                    "service_unavailable: a backing service did not answer; enqueue_failed: "
                    "the queue refused the message and its row reads failed"
                ),
                403: SENDING_PAUSED,
            },
        ),
        tags=["messages"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def send(request: Annotated[SendRequest, Body()]) -> Response[str]:
        active = services()
        caller = caller_of(router, active, Scope.EMAIL_SEND)
        client, mode = caller.client, caller.mode
        refuse_if_paused(client, live=mode is KeyKind.LIVE)
        # Powertools' header map is case-insensitive.
        headers = router.current_event.headers
        trace_id = trace_id_of(headers)
        logger.append_keys(trace_id=trace_id)
        hold: idempotency.Hold | None = None
        key = headers.get("Idempotency-Key")
        if request.idempotency_key is not None:
            # The body may carry the key too (a batch item's shape); one key a send.
            if key is not None and key != request.idempotency_key:
                raise InvalidRequest(
                    "the Idempotency-Key header and the body's idempotency_key differ",
                    details=[{"field": "idempotency_key", "message": "differs from the header"}],
                )
            key = request.idempotency_key
        if key is not None:
            begun = idempotency.begin(
                active.uow(),
                client.id,
                idempotency.validate_key(key),
                sending.request_fingerprint(request),
            )
            if isinstance(begun, idempotency.Replay):
                logger.info("idempotent replay", extra={"message_id": str(begun.message_id)})
                return _accepted(json.dumps(begun.response), trace_id)
            hold = begun
        warnings: list[str] = []
        lint: list[str] = []

        def complete_key(uow: UnitOfWork, message: Message) -> None:
            if hold is not None:
                idempotency.complete(
                    uow, hold, message.id, accepted_body(message, mode, warnings, lint)
                )

        try:
            prepared = sending.prepare_send(
                active.templates,
                active.renderer,
                active.send_limits,
                client=client,
                request=request,
                trace_id=trace_id,
                mode=mode,
                check_sender=sending.sender_check(
                    sender_check_for(active, mode), active.uow(), client
                ),
                now=active.clock.now(),
                resolve_relay=relay_resolver(active.uow(), client.id),
            )
            warnings.extend(prepared.render_warnings)
            lint.extend(prepared.lint_warnings)
            # Counted once the request is valid, given back if it is not accepted.
            with QuotaCharge(active.quota, active.uow, client) as quota:
                message = sending.accept_prepared(
                    active.uow(),
                    active.queue,
                    prepared,
                    client=client,
                    # Test mode is never charged (issue 15).
                    reserve_quota=quota.take if mode is KeyKind.LIVE else None,
                    on_accepted=complete_key,
                    contents=active.inline_contents,
                    routing=active.queue_routing,
                )
        except Exception:
            # Nothing was accepted (enqueue_failed rows read failed): the key
            # is free again for the client's retry.
            if hold is not None:
                idempotency.release(active.uow(), hold)
            raise
        logger.append_keys(message_id=str(message.id))
        logger.info(
            "message scheduled" if message.status is MessageStatus.SCHEDULED else "message queued",
            extra={"template": message.template_name},
        )
        active.metrics.email_queued(client_id=str(client.id))
        return _accepted(json.dumps(accepted_body(message, mode, warnings, lint)), trace_id)

    @router.post(
        "/v1/send/batch",
        status_code=200,
        summary="Send up to 100 emails in one call, each answered by its index",
        description=(
            "The body is a JSON array of 1 to 100 items, each exactly the body of "
            "`POST /v1/send` (a template or inline content, with its own optional "
            "`idempotency_key`). `X-Batch-Validation: strict` (the default): one invalid "
            "item refuses the batch with 422 naming every bad item by index in "
            "`error.details`, and nothing is written. `permissive`: the valid items are "
            "accepted and the others listed in `errors` by index. Quota, rate limit (one "
            "token per item) and the suppression list apply per item. The accepted items "
            "are written in one transaction and queued. An `Idempotency-Key` header makes "
            "the whole call safe to repeat; an item's `idempotency_key` makes that item safe "
            "to resend in another batch."
        ),
        responses=answers(
            200,
            "What became of each item: data (accepted, by index) and errors (by index)",
            BatchAccepted,
            errors={
                422: (
                    "validation_error: not an array of 1 to 100 items, a bad "
                    "X-Batch-Validation, or (strict) invalid items, each named in details "
                    "by index; suppressed (strict): every recipient of some item is "
                    "suppressed; idempotency_key_reused"
                ),
                409: "idempotency_in_progress: the key's first call is still in flight",
                429: "rate_limited or quota_exceeded; Retry-After says when to try again",
                503: "service_unavailable: a backing service did not answer",
                403: SENDING_PAUSED,
            },
        ),
        tags=["messages"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def send_batch(
        items: Annotated[
            list[BatchItem],
            Body(
                min_length=1,
                max_length=batch_send.MAX_BATCH_ITEMS,
                description="Send requests, each the body of POST /v1/send.",
            ),
        ],
        x_batch_validation: Annotated[
            batch_send.BatchValidation | None,
            Header(
                alias=batch_send.VALIDATION_HEADER,
                description="strict (the default): all or nothing; permissive: item by item",
            ),
        ] = None,
    ) -> Response[str]:
        active = services()
        caller = caller_of(router, active, Scope.EMAIL_SEND)
        # Admitted once per invocation: this is the admission caller_of used.
        admission = client_gate.admitted(active, lambda: _presented(router))
        client, mode = caller.client, caller.mode
        refuse_if_paused(client, live=mode is KeyKind.LIVE)
        headers = router.current_event.headers
        trace_id = trace_id_of(headers)
        logger.append_keys(trace_id=trace_id)
        validation = x_batch_validation or batch_send.BatchValidation.STRICT
        take_more(active.rate_limiter, admission, len(items))
        hold: idempotency.Hold | None = None
        key = headers.get("Idempotency-Key")
        if key is not None:
            begun = idempotency.begin(
                active.uow(),
                client.id,
                idempotency.validate_key(key),
                idempotency.fingerprint({"validation": validation.value, "items": items}),
            )
            if isinstance(begun, idempotency.Replay):
                logger.info("idempotent batch replay")
                return _batch_answer(json.dumps(begun.response), trace_id)
            hold = begun
        try:
            answer = batch_send.send_batch(
                active.uow,
                active.queue,
                active.templates,
                active.renderer,
                active.send_limits,
                items=items,
                context=batch_send.BatchContext(
                    client,
                    mode,
                    trace_id,
                    validation,
                    check_sender=sending.sender_check(
                        sender_check_for(active, mode), active.uow(), client
                    ),
                    resolve_relay=relay_resolver(active.uow(), client.id),
                    routing=active.queue_routing,
                ),
                # Test mode is never charged (issue 15).
                charge=BatchQuotaCharge(active.quota, active.uow, client)
                if mode is KeyKind.LIVE
                else None,
                contents=active.inline_contents,
                call_key=hold,
            )
        except Exception:
            if hold is not None:
                idempotency.release(active.uow(), hold)
            raise
        body = answer.as_json()
        for _ in body["data"]:
            active.metrics.email_queued(client_id=str(client.id))
        logger.info(
            "batch queued",
            extra={"accepted": len(body["data"]), "refused": len(body["errors"])},
        )
        return _batch_answer(json.dumps(body), trace_id)

    @router.post(
        "/v1/messages/<message_id>/retry",
        status_code=202,
        summary="Send a failed message again",
        description=(
            "A new attempt on the same message: it goes back to queued, a `retried` event "
            "records what it had failed with, and the worker sends it as any queued "
            "message. Only a `failed` message can be retried."
        ),
        responses=answers(
            202,
            "Queued again",
            Accepted,
            errors={
                404: "message_not_found: no such message for this client",
                409: "message_not_retryable: the message is not failed",
                503: "enqueue_failed or service_unavailable: try again",
            },
        ),
        tags=["messages"],
        security=client_key(Scope.EMAIL_SEND),
    )
    def retry_message(message_id: Annotated[str, Path(max_length=64)]) -> Response[str]:
        active = services()
        caller = caller_of(router, active, Scope.EMAIL_SEND)
        message = sending.retry_message(
            active.uow(),
            active.queue,
            client_id=caller.client.id,
            message_id=message_id,
            routing=active.queue_routing,
        )
        logger.append_keys(message_id=str(message.id), trace_id=message.trace_id)
        logger.info("message retried")
        body = Accepted(id=message.id, status=message.status, mode=mode_of(message))
        return _accepted(body.model_dump_json(), message.trace_id)

    return router


def _presented(router: Router) -> client_gate.Presented:
    event = router.current_event
    return client_gate.presented(event.headers, client_gate.source_ip_of(event.raw_event))


def _batch_answer(body: str, trace_id: str) -> Response[str]:
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers={"X-Trace-Id": trace_id},
    )


def _accepted(body: str, trace_id: str) -> Response[str]:
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers={"X-Trace-Id": trace_id},
    )


def _engagement(active: Services, message: Message) -> EngagementView | None:
    from mailroom.services.tracking import engagement_of

    engagement = engagement_of(active.tracking_store, active.tracking_config, message)
    return None if engagement is None else engagement_view(engagement)


def status_routes(services: ServicesProvider) -> Router:
    router = Router()

    @router.get(
        "/v1/messages/<message_id>",
        summary="What became of a message",
        responses=answers(
            200,
            "The message and its event history",
            errors={404: "message_not_found: no such message for this client"},
        ),
        tags=["messages"],
        security=client_key(Scope.EMAIL_READ),
    )
    def get_message(message_id: Annotated[str, Path()]) -> MessageView:
        active = services()
        client = _authenticated(router, active, Scope.EMAIL_READ)
        history = status.message_history(active.uow(), client_id=client.id, message_id=message_id)
        message = history.message
        logger.append_keys(message_id=str(message.id), trace_id=message.trace_id)
        return MessageView(
            id=message.id,
            status=message.status,
            mode=mode_of(message),
            template=message.template_name,
            from_=message.from_address,
            to=message.to,
            cc=message.cc,
            bcc=message.bcc,
            subject=message.subject,
            provider=message.provider,
            provider_msg_id=message.provider_msg_id,
            attempts=message.attempts,
            last_error=message.last_error,
            metadata=message.metadata,
            tags=list(message.options.tags),
            bulk=message.options.bulk,
            trace_id=message.trace_id,
            created_at=message.created_at,
            updated_at=message.updated_at,
            sent_at=message.sent_at,
            events=[EventView(type=e.type.value, at=e.at, detail=e.detail) for e in history.events],
            recipients=recipient_views(history.recipients),
            scheduled_at=message.scheduled_at,
            schedule_id=message.schedule_id,
            schedule_run_id=message.schedule_run_id,
            engagement=_engagement(active, message),
        )

    @router.get(
        "/v1/messages/<message_id>/events",
        summary="A message's event history, oldest first",
        responses=answers(
            200,
            "The events",
            MessageEventsView,
            errors={404: "message_not_found: no such message for this client"},
        ),
        tags=["messages"],
        security=client_key(Scope.EMAIL_READ),
    )
    def get_message_events(message_id: Annotated[str, Path()]) -> MessageEventsView:
        active = services()
        client = _authenticated(router, active, Scope.EMAIL_READ)
        history = status.message_history(active.uow(), client_id=client.id, message_id=message_id)
        return events_view(history.message, history.events)

    @router.get(
        "/v1/messages",
        summary="The client's messages, newest first, with cursor pagination",
        responses=answers(
            200,
            "One page",
            MessagePageView,
            errors={422: "validation_error: a bad filter, or a cursor this API did not return"},
        ),
        tags=["messages"],
        security=client_key(Scope.EMAIL_READ),
    )
    def list_messages(
        status_: Annotated[MessageStatus | None, Query(alias="status")] = None,
        recipient: Annotated[str | None, Query(max_length=320)] = None,
        since: Annotated[datetime | None, Query(description="created at or after")] = None,
        until: Annotated[datetime | None, Query(description="created before")] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=status.MAX_PAGE)] = 50,
    ) -> MessagePageView:
        active = services()
        client = _authenticated(router, active, Scope.EMAIL_READ)
        page = status.list_messages(
            active.uow(),
            client_id=client.id,
            where=MessageFilter(status=status_, recipient=recipient, since=since, until=until),
            cursor=cursor,
            limit=limit,
        )
        return page_view(page)

    @router.get(
        "/health",
        summary="Whether PostgreSQL and Redis answer; DLQ depth and oldest queued message age",
        responses=health_answers(),
        tags=["operations"],
    )
    def health() -> Response[str]:
        return health_response(services(), with_backlog=True)

    return router


class Gate(Protocol):
    """A check that runs before routing and validation, for the requests it applies to."""

    def applies_to(self, event: Mapping[str, Any]) -> bool: ...

    def check(self, event: Mapping[str, Any]) -> None: ...


class MailroomApi(APIGatewayRestResolver):
    """Powertools' REST resolver, refusing unreadable requests before anything parses them.

    Powertools runs request validation ahead of every user middleware, so the
    method, size, media-type and encoding checks sit in front of ``resolve``
    instead; the body is parsed by ``request_body.parse_json`` (strict JSON).
    """

    def __init__(
        self,
        max_request_bytes: Callable[[], int],
        client_gate: ClientGate | None = None,
        admin_gate: Gate | None = None,
        metrics: Callable[[], Metrics] | None = None,
    ) -> None:
        super().__init__(enable_validation=True, json_body_deserializer=parse_json)
        self._max_request_bytes = max_request_bytes
        self._gates = [gate for gate in (client_gate, admin_gate) if gate is not None]
        self._metrics = metrics or _process_metrics

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        started = time.perf_counter()
        route = str(event.get("resource") or "other")
        method = str(event.get("httpMethod") or "").upper()
        parent = tracing.incoming_parent(event.get("headers") or {})
        with tracing.root_span("api.request", traceparent=parent, route=route, method=method):
            answer = self._gated_resolve(event, context)
        metrics = self._metrics()
        status = int(answer.get("statusCode") or 0)
        metrics.api_request(route, method, status, time.perf_counter() - started)
        if status == 429:
            metrics.rate_limited(_error_code(answer))
        metrics.flush()
        return answer

    def _gated_resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        with client_gate.invocation() as state:
            try:
                # Who is calling comes before anything about what they sent,
                # but after routing: a method the path does not take is 405
                # for anyone (what a path allows is no secret).
                for gate in self._gates:
                    if gate.applies_to(event):
                        self._refuse_undeclared_method(event)
                        with tracing.span("api.authenticate"):
                            gate.check(event)
                event = prepare_event(
                    event, self._max_request_bytes(), lambda: self._text_body_of(event)
                )
            except MailroomError as error:
                logger.warning("request refused", extra={"code": error.code})
                return state.decorate(proxy_error_response(error))
            return state.decorate(super().resolve(dict(event), context))

    def _text_body_of(self, event: Mapping[str, Any]) -> TextBody | None:
        """The TextBody the route this request goes to declares, if any."""
        path = str(event.get("path") or "")
        method = str(event.get("httpMethod") or "").upper()
        for route in routes_of(self):
            if route.method == method and route.rule.match(path):
                return TextBody.of_route(route.openapi_extensions)
        return None

    def _refuse_undeclared_method(self, event: Mapping[str, Any]) -> None:
        # Other requests are routed by Powertools first, and its not-found
        # handler answers 405 (install_error_handlers).
        path = str(event.get("path") or "")
        method = str(event.get("httpMethod") or "").upper()
        allowed = allowed_methods(self, path)
        if allowed and method not in allowed:
            raise method_not_allowed(method, path, allowed)


def _process_metrics() -> Metrics:
    from mailroom.bootstrap import default_services

    return default_services().metrics


def _error_code(answer: Mapping[str, Any]) -> str:
    """The ``error.code`` of an error answer (bounded: Mailroom's codes), else ``other``."""
    try:
        code = json.loads(answer.get("body") or "{}")["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "other"
    return code if isinstance(code, str) and code.isidentifier() else "other"


def create_api(
    routers: Iterable[Router],
    *,
    max_request_bytes: Callable[[], int],
    client_gate: ClientGate | None = None,
    admin_gate: Gate | None = None,
    metrics: Callable[[], Metrics] | None = None,
) -> APIGatewayRestResolver:
    """A resolver for these routes; /v1/ (/admin/) requests pass the client (admin) gate first.

    ``metrics``: where request latency goes (the process's services by default).
    """
    app = MailroomApi(max_request_bytes, client_gate, admin_gate, metrics)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    return app


def all_routes(services: ServicesProvider) -> list[Router]:
    # Only the OpenAPI document needs the other functions' routes: imported
    # here, send and status do not load the admin and webhook modules at
    # cold start (issue 8).
    from mailroom.entrypoints.admin import admin_routes
    from mailroom.entrypoints.analytics import analytics_routes
    from mailroom.entrypoints.batches import batch_routes
    from mailroom.entrypoints.client_suppressions import client_suppression_routes
    from mailroom.entrypoints.client_templates import client_template_routes
    from mailroom.entrypoints.client_webhooks import webhook_routes
    from mailroom.entrypoints.domains import domain_routes
    from mailroom.entrypoints.inbound import inbound_function_routes
    from mailroom.entrypoints.operations import operations_routes
    from mailroom.entrypoints.queues import queue_routes
    from mailroom.entrypoints.schedules import message_schedule_routes, schedule_routes
    from mailroom.entrypoints.smtp_configs import smtp_config_routes
    from mailroom.entrypoints.tracking import tracking_function_routes
    from mailroom.entrypoints.webhooks import webhooks_function_routes

    return [
        send_routes(services),
        batch_routes(services),
        client_template_routes(services),
        schedule_routes(services),
        status_routes(services),
        message_schedule_routes(services),
        client_suppression_routes(services),
        document_routes(services),
        api_key_routes(services),
        domain_routes(services),
        webhook_routes(services),
        operations_routes(services),
        smtp_config_routes(services),
        queue_routes(services),
        analytics_routes(services),
        *webhooks_function_routes(services),
        *inbound_function_routes(services),
        *tracking_function_routes(services),
        *admin_routes(services),
    ]


# What the committed document names as its server; served, it names its own URL.
LOCAL_RUNNER_URL = "http://127.0.0.1:3000"


def document_options(server_url: str | None = LOCAL_RUNNER_URL) -> dict[str, Any]:
    """What the OpenAPI document says besides the routes; /openapi.json and /docs share it.

    No API-wide security requirement: each route declares its own (the client
    key pair, the admin token, or none), so public routes need no credentials.
    """
    description = (
        "the local runner (`make dev`) at its default port"
        if server_url == LOCAL_RUNNER_URL
        else "where this document was served from"
    )
    return {
        "title": API_TITLE,
        "version": API_VERSION,
        "description": API_DESCRIPTION,
        # None: Powertools names the base path of the request (Swagger UI).
        "servers": [Server(url=server_url, description=description)] if server_url else None,
        "security_schemes": {
            "apiKey": APIKey.model_validate({"name": "X-Api-Key", "in": APIKeyIn.header}),
            "apiSecret": APIKey.model_validate({"name": "X-Api-Secret", "in": APIKeyIn.header}),
            "adminToken": HTTPBearer(description="the admin token (admin routes only)"),
            "clientToken": HTTPBearer(
                description="an API key's token, mr_live_<key id>_<secret><checksum> "
                "(the answer to POST /v1/api-keys gives it)"
            ),
        },
    }


class DocumentedApi(MailroomApi):
    """The resolver the document is generated from: Powertools' document, finished.

    ``finish_document`` adds the statuses every route of a kind can answer and
    Mailroom's error shape; both /openapi.json and /docs go through here.
    """

    def get_openapi_schema(self, **options: Any) -> OpenAPI:
        generated = super().get_openapi_schema(**options)
        document = generated.model_dump(mode="json", by_alias=True, exclude_none=True)
        return OpenAPI.model_validate(finish_document(document))


def _documented_api(services: ServicesProvider) -> DocumentedApi:
    app = DocumentedApi(max_request_bytes=lambda: 0)
    install_error_handlers(app)
    for router in all_routes(services):
        app.include_router(router)
    return app


def openapi_json(services: ServicesProvider, server_url: str | None = LOCAL_RUNNER_URL) -> str:
    """The OpenAPI 3.1 document for every route of every function."""
    return _documented_api(services).get_openapi_json_schema(**document_options(server_url))


def served_from(event: Mapping[str, Any]) -> str | None:
    """The base URL a request came in on: scheme, host and port, and the stage if in the path.

    API Gateway's ``requestContext.path`` keeps the stage (``/Prod/openapi.json``)
    unless a custom domain maps it away; the local runner serves at the root.
    """
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    context = event.get("requestContext") or {}
    host = headers.get("host") or context.get("domainName")
    if not host:
        return None
    scheme = headers.get("x-forwarded-proto", "https").split(",")[0].strip() or "https"
    full_path = str(context.get("path") or "")
    path = str(event.get("path") or "")
    stage_prefix = full_path[: -len(path)] if path and full_path.endswith(path) else ""
    return f"{scheme}://{host}{stage_prefix}"


def document_routes(services: ServicesProvider) -> Router:
    router = Router()

    @router.get(
        "/openapi.json",
        summary="This document, naming the URL it was served from as its server",
        responses=answers(200, "The OpenAPI 3.1 document", {"type": "object"}),
        tags=["operations"],
    )
    def openapi_document() -> Response[str]:
        return Response(
            status_code=200,
            content_type=content_types.APPLICATION_JSON,
            body=openapi_json(services, served_from(router.current_event.raw_event)),
        )

    return router


def docs_api(services: ServicesProvider) -> APIGatewayRestResolver:
    """Serves ``/openapi.json`` and Swagger UI at ``/docs`` for the whole API."""
    app = _documented_api(services)
    # The routes name security schemes: without them Powertools refuses to
    # build the document and /docs answered 500. Without servers, Swagger UI
    # calls the host and stage it was loaded from.
    app.enable_swagger(path="/docs", **document_options(server_url=None))
    return app
