"""The webhook dispatcher (SQS) and tick (schedule) handlers: issue 19."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.adapters import tracing
from mailroom.adapters.webhook_queue import delivery_ids_of
from mailroom.bootstrap import Services
from mailroom.entrypoints.observability import logger
from mailroom.services import outbound_webhooks


class DispatchFailed(Exception):
    """The batch could not be claimed or recorded; SQS delivers its records again."""


def process_webhook_batch(
    event: dict[str, Any], context: LambdaContext, services: Services
) -> dict[str, Any]:
    """Every record's deliveries are dispatched together (one claim, one write of outcomes)."""
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    ids: list[int] = []
    for record in event.get("Records", []):
        try:
            ids.extend(delivery_ids_of(record.get("body", "")))
        except ValueError:
            # Nothing we wrote: acknowledged (and logged) so it does not loop to the DLQ.
            logger.warning("unreadable webhook queue record", extra={"body": record.get("body")})
    failure: Exception | None = None
    # Issue 23: one span per dispatcher batch; each POST is a child span
    # (the dispatcher's lanes run in a copy of this context).
    with tracing.root_span("webhook.dispatch", deliveries=len(ids)):
        try:
            report = services.webhook_dispatcher.dispatch(ids)
            logger.info("webhooks dispatched", extra={"report": vars(report)})
        except Exception as error:  # noqa: BLE001 - reported per record below
            # Claims lapse and the records come back: at least once, never lost.
            logger.exception("webhook dispatch failed")
            failure = error
        if failure is None:
            _relay_quietly(services)

    def handle(record: SQSRecord) -> None:
        if failure is not None:
            raise DispatchFailed(str(failure))

    return dict(
        process_partial_response(
            event=event, record_handler=handle, processor=processor, context=context
        )
    )


def _relay_quietly(services: Services) -> None:
    """A relay after each batch keeps latency low between ticks; a failure waits for the tick."""
    try:
        outbound_webhooks.relay(
            services.uow(),
            services.webhook_queue,  # type: ignore[arg-type]
            batch_size=services.settings.webhook_relay_batch_size,
        )
    except Exception:  # noqa: BLE001 - the tick relays instead
        logger.warning("relay after dispatch failed; the tick relays instead", exc_info=True)


def _purge_quietly(services: Services) -> int:
    """Events past the retention go; a failure is logged and the next tick tries again."""
    settings = services.settings
    try:
        return outbound_webhooks.purge_expired(
            services.uow(),
            retention=timedelta(days=settings.webhook_retention_days),
            limit=settings.webhook_purge_batch_size,
        )
    except Exception:  # noqa: BLE001 - the relay above is what this tick is for
        logger.warning("webhook retention purge failed; the next tick tries again", exc_info=True)
        return 0


def run_webhook_tick(
    event: dict[str, Any], context: LambdaContext, services: Services
) -> dict[str, Any]:
    assert services.webhook_queue is not None
    report = outbound_webhooks.relay(
        services.uow(),
        services.webhook_queue,
        batch_size=services.settings.webhook_relay_batch_size,
    )
    counts = {
        "numbered": report.numbered,
        "deliveries": report.deliveries,
        "queued": report.queued,
        "relay_busy": report.relay_busy,
        "purged": _purge_quietly(services),
    }
    logger.info("webhook tick", extra=counts)
    return counts
