"""Provider delivery webhooks: POST /webhooks/{provider}, and SNS invoking the function.

The HTTP contract for providers: 200 once the events are stored (duplicates
and orphans included, so the provider stops retrying); 4xx for a request we
refuse (bad signature, stale or replayed, foreign topic, malformed); 5xx only
when we failed (database or Redis down, key not configured), so the provider
retries later. Nothing is applied unless the whole request verifies.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from mailroom.adapters import tracing
from mailroom.adapters.metrics.base import Metrics
from mailroom.adapters.webhooks.base import WebhookRequest
from mailroom.adapters.webhooks.registry import WebhookRegistry
from mailroom.bootstrap import Services
from mailroom.domain.errors import (
    MailroomError,
    MalformedWebhook,
    PayloadTooLarge,
    WebhookNotConfigured,
    WebhookRejected,
)
from mailroom.domain.feedback import DeliveryEvent
from mailroom.entrypoints.health import component_health_routes
from mailroom.entrypoints.http_errors import install_error_handlers, proxy_error_response
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers
from mailroom.services import feedback
from mailroom.services.feedback import FeedbackSummary

ServicesProvider = Callable[[], Services]


class WebhookReceipt(BaseModel):
    received: int
    applied: int
    duplicates: int
    orphans: int
    adopted: int


# What POST /webhooks/{provider} reads, for the OpenAPI document.
PROVIDER_PAYLOAD: dict[str, Any] = {
    "required": True,
    "description": (
        "The provider's payload exactly as signed: an SNS message (JSON, which SNS sends "
        "as text/plain), a SendGrid event array, a Mailgun event object. Any media type."
    ),
    "content": {
        "application/json": {"schema": {}},
        "text/plain": {"schema": {"type": "string"}},
    },
}


def registry_of(services: Services) -> WebhookRegistry:
    if services.webhooks is None:
        raise WebhookNotConfigured("no webhook registry is wired")
    return services.webhooks


def webhook_routes(services: ServicesProvider) -> Router:
    router = Router()

    @router.post(
        "/webhooks/<provider>",
        summary="Delivery events from an email provider",
        description=(
            "`ses` (SNS messages: notifications, subscription confirmations), `sendgrid` "
            "(Event Webhook batches, signed) or `mailgun` (webhooks, signed). The provider "
            "authenticates with its signature; no API key."
        ),
        responses=answers(
            200,
            "Stored (duplicates and unknown messages included)",
            WebhookReceipt,
            errors={
                400: "malformed_payload",
                401: "invalid_signature, stale_timestamp, replayed_token",
                403: "topic_not_allowed, untrusted_certificate_url",
                404: "unknown_provider",
                413: "payload_too_large: larger than WEBHOOK_MAX_REQUEST_BYTES",
                503: "webhook_not_configured, service_unavailable: retry",
            },
        ),
        tags=["webhooks"],
        # No security requirement: no API key, the provider's signature authenticates.
        # The body is read raw (it is what was signed), so no model declares it.
        openapi_extensions={"requestBody": PROVIDER_PAYLOAD},
    )
    def receive(provider: Annotated[str, Path()]) -> Response[str]:
        active = services()
        webhook = registry_of(active).get(provider)
        event = router.current_event
        request = WebhookRequest.of(_raw_body(event.raw_event), dict(event.headers or {}))
        summary = webhook.handle(request, lambda events: ingest(active, events))
        logger.info("webhook processed", extra={"provider": provider, **_counts(summary)})
        return Response(
            status_code=200,
            content_type=content_types.APPLICATION_JSON,
            body=WebhookReceipt(**_counts(summary)).model_dump_json(),
        )

    return router


def ingest(services: Services, events: Sequence[DeliveryEvent]) -> FeedbackSummary:
    """Record verified delivery events: one span, and a count per event type."""
    with tracing.span("feedback.ingest", events=len(events)):
        summary = feedback.record_delivery_events(services.uow(), events)
    for event in events:
        services.metrics.event_ingested(event.event_type.value)
    if events:
        services.metrics.webhook_delivery(events[0].provider, "accepted")
    return summary


def is_sns_event(event: Mapping[str, Any]) -> bool:
    """True for the event SNS hands a subscribed function (not an API Gateway request)."""
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, Mapping) and r.get("EventSource") == "aws:sns" for r in records)
    )


def process_sns_event(event: Mapping[str, Any], services: Services) -> dict[str, Any]:
    """SES feedback through an SNS subscription of the function itself.

    The same verification as over HTTPS (signature, topic allowlist). A
    refused record is logged and dropped: raising would make Lambda retry
    something that can never pass. Our own failures raise, so Lambda's
    asynchronous retries (and the function's failure destination) take over.
    """
    webhook = registry_of(services).ses()
    totals = {"received": 0, "applied": 0, "duplicates": 0, "orphans": 0, "adopted": 0}
    refused = 0
    for record in event["Records"]:
        sns = record.get("Sns")
        try:
            if not isinstance(sns, Mapping):
                raise MalformedWebhook("the SNS record has no Sns object")
            verified = webhook.validate_lambda_record(sns)
            summary = ingest(services, webhook.parse_events(verified))
        except WebhookRejected as error:
            refused += 1
            services.metrics.webhook_delivery("ses", "refused")
            logger.warning(
                "SNS record refused",
                extra={"code": error.code, "reason": error.message, "topic": _topic(sns)},
            )
            continue
        for key, value in _counts(summary).items():
            totals[key] += value
    logger.info("SNS records processed", extra={**totals, "refused": refused})
    services.metrics.flush()
    return {**totals, "refused": refused}


def create_webhooks_api(routers: list[Router], *, max_request_bytes: Callable[[], int]) -> Any:
    """The webhooks function's resolver.

    Unlike the client API it takes any media type (SNS posts JSON as
    ``text/plain``) and allows larger bodies (providers batch events); what is
    trusted is decided by the signature, not the headers.
    """
    app = WebhooksApi(max_request_bytes)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    return app


class WebhooksApi(APIGatewayRestResolver):
    def __init__(
        self,
        max_request_bytes: Callable[[], int],
        metrics: Callable[[], Metrics] | None = None,
    ) -> None:
        super().__init__(enable_validation=True)
        self._max_request_bytes = max_request_bytes
        self._metrics = metrics or _process_metrics

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        limit = self._max_request_bytes()
        try:
            if len(_raw_body(event)) > limit:
                raise PayloadTooLarge(
                    f"the request body is larger than {limit} bytes",
                    details=[{"limit_bytes": limit}],
                )
        except MailroomError as error:
            logger.warning("webhook refused", extra={"code": error.code})
            return proxy_error_response(error)
        answer = super().resolve(event, context)
        status = int(answer.get("statusCode") or 0)
        metrics = self._metrics()
        if status >= 400:
            provider = str((event.get("pathParameters") or {}).get("provider") or "unknown")
            # A refusal (4xx) stops the provider; a failure (5xx) makes it retry.
            metrics.webhook_delivery(
                provider if provider.isidentifier() else "unknown",
                "refused" if status < 500 else "failed",
            )
        metrics.flush()
        return answer


def _process_metrics() -> Metrics:
    from mailroom.bootstrap import default_services

    return default_services().metrics


def webhooks_function_routes(services: ServicesProvider) -> list[Router]:
    return [component_health_routes("/webhooks/health", services), webhook_routes(services)]


def _raw_body(event: Mapping[str, Any]) -> bytes:
    """The body bytes exactly as the provider signed them."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as error:
            raise MalformedWebhook("the body is not valid base64") from error
    return str(body).encode("utf-8")


def _counts(summary: feedback.FeedbackSummary) -> dict[str, int]:
    return {
        "received": summary.received,
        "applied": summary.applied,
        "duplicates": summary.duplicates,
        "orphans": summary.orphans,
        "adopted": summary.adopted,
    }


def _topic(sns: Any) -> str | None:
    topic = sns.get("TopicArn") if isinstance(sns, Mapping) else None
    return topic[:300] if isinstance(topic, str) else None
