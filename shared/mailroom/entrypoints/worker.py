"""The SQS worker: one batch of queued message ids in, partial failures out."""

from __future__ import annotations

import uuid
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Json, ValidationError

from mailroom.adapters import tracing
from mailroom.adapters.metrics.base import error_type_of
from mailroom.adapters.operator_signals import SignalKey
from mailroom.adapters.queue import TRACE_ID_ATTRIBUTE
from mailroom.bootstrap import Services
from mailroom.domain.errors import DependencyUnavailable
from mailroom.domain.queues import Band
from mailroom.domain.retry import Backoff
from mailroom.entrypoints.observability import logger
from mailroom.services.delivery import (
    DeliveryOutcome,
    DeliveryResult,
    SendItem,
    deliver_batch,
)


class QueuedMessage(BaseModel):
    message_id: uuid.UUID


class SendRecord(SqsRecordModel):
    body: Json[QueuedMessage]


class RetryLater(Exception):
    """Raised for a record the queue must deliver again; BatchProcessor reports it."""


def process_send_batch(
    event: dict[str, Any], context: LambdaContext, services: Services
) -> dict[str, Any]:
    # A batch whose every record failed still answers with batchItemFailures
    # rather than an invocation error: the outcome is the same (all retried),
    # and the answer stays one shape for the local runner and for tests.
    # The records are parsed once, here, not again by the batch processor
    # (a second pydantic pass per record, ~2% of the worker's time: issue 8).
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    settings = services.settings
    backoff = Backoff(
        base_seconds=settings.retry_base_delay_seconds,
        cap_seconds=settings.retry_max_delay_seconds,
        jitter=settings.retry_jitter,
    )
    parsed = _parsed_records(event)
    # The whole batch is claimed, sent and recorded up front (a few
    # statements, services/delivery.py); the per-record handler then only
    # turns each outcome into an acknowledgement, a postponement or a DLQ move.
    records = [record for record in parsed.values() if isinstance(record, SendRecord)]
    parents = {record.messageId: _trace_parent(record) for record in records}
    with tracing.batch_span("worker.batch", list(parents.values())):
        outcomes, batch_error = _deliver_batch(records, services, backoff)

    def handle(record: SQSRecord) -> None:
        # The batch processor passes the record by this keyword.
        parsed_record = parsed[record.message_id]
        if isinstance(parsed_record, ValidationError):
            raise parsed_record
        send_record(parsed_record)

    def send_record(record: SendRecord) -> None:
        # The record's own span, in its message's trace whatever the batch mixed.
        with tracing.root_span("worker.message", traceparent=parents[record.messageId]):
            settle_record(record)

    def settle_record(record: SendRecord) -> None:
        attribute = record.messageAttributes.get(TRACE_ID_ATTRIBUTE)
        trace_id = attribute.stringValue if attribute else None
        message_id = record.body.message_id
        logger.append_keys(
            message_id=str(message_id), trace_id=trace_id, sqs_message_id=record.messageId
        )
        try:
            if batch_error is not None:
                # Nothing was recorded: the queue delivers the record again.
                raise batch_error
            receive_count = int(record.attributes.ApproximateReceiveCount)
            outcome = outcomes[record.messageId]
            logger.info(
                f"delivery {outcome.result.value}",
                extra={
                    "result": outcome.result.value,
                    "error": outcome.error,
                    "receive_count": receive_count,
                    "retry_in_seconds": outcome.retry_after_seconds,
                },
            )
            if outcome.result is DeliveryResult.DEFERRED:
                _put_back(services, record, outcome, trace_id)
                return
            if outcome.result is DeliveryResult.RETRY:
                # Backoff: the record stays invisible for the delay, then
                # SQS hands it to a worker again.
                services.queue_records.postpone_in(
                    record.eventSourceARN, record.receiptHandle, outcome.retry_after_seconds or 0
                )
                raise RetryLater(outcome.error or "retry")
            if outcome.result is DeliveryResult.FAILED:
                services.metrics.email_failed(error_type_of(outcome.error))
            if outcome.dead_letter:
                _dead_letter(services, outcome, trace_id)
        finally:
            logger.remove_keys(["message_id", "trace_id", "sqs_message_id"])

    try:
        return dict(
            process_partial_response(
                event=event, record_handler=handle, processor=processor, context=context
            )
        )
    finally:
        services.metrics.flush()


def _trace_parent(record: SendRecord) -> str | None:
    """The trace context the API put on the record (None while tracing is off)."""
    if not tracing.enabled():
        return None
    traceparent = record.messageAttributes.get(tracing.TRACEPARENT_ATTRIBUTE)
    trace_id = record.messageAttributes.get(TRACE_ID_ATTRIBUTE)
    return tracing.record_parent(
        traceparent.stringValue if traceparent else None,
        trace_id.stringValue if trace_id else None,
    )


def _parsed_records(event: dict[str, Any]) -> dict[str, SendRecord | ValidationError]:
    """Each record by its SQS message id: parsed, or why it could not be.

    A record that does not parse is reported as failed by the handler (the
    queue delivers it again, then the DLQ keeps it), as the batch processor
    did when it parsed with the model itself.
    """
    parsed: dict[str, SendRecord | ValidationError] = {}
    for raw in event.get("Records", []):
        try:
            record = SendRecord.model_validate(raw)
        except ValidationError as error:
            parsed[str(raw.get("messageId"))] = error
            continue
        parsed[record.messageId] = record
    return parsed


def _deliver_batch(
    records: list[SendRecord], services: Services, backoff: Backoff
) -> tuple[dict[str, DeliveryOutcome], Exception | None]:
    """Every record's outcome by SQS message id, or the error that stopped the batch."""
    items = [
        SendItem(
            record.body.message_id,
            last_receive=services.queue_records.is_last_receive(
                int(record.attributes.ApproximateReceiveCount)
            ),
        )
        for record in records
    ]
    try:
        results = deliver_batch(
            services.uow(),
            services.templates,
            services.renderer,
            services.providers,
            items=items,
            max_attempts=services.settings.max_send_attempts,
            backoff=backoff,
            lease_seconds=services.settings.claim_lease_seconds,
            sender_policy=services.sender_policy,
            rewrite=services.tracking_rewriter,
            gate=services.claim_gate,
        )
    except Exception as error:  # noqa: BLE001 - reported per record by the batch processor
        logger.exception("delivery batch failed before its outcomes were recorded")
        return {}, error
    by_record = {
        record.messageId: outcome for record, outcome in zip(records, results, strict=True)
    }
    return by_record, None


def _put_back(
    services: Services, record: SendRecord, outcome: DeliveryOutcome, trace_id: str | None
) -> None:
    """A record over a send rate (issue 20) goes back on its band with a delay, as new.

    A fresh SQS message rather than a longer invisibility: its receive count
    starts again, so waiting for a rate limit never walks it to the DLQ, and
    the row's attempts are untouched. Should SQS refuse the copy, the record
    itself is held back instead (its receive count then grows by one).
    """
    band = outcome.band or Band.NORMAL
    seconds = outcome.retry_after_seconds or 1
    try:
        services.queue.enqueue_in(
            band,
            outcome.message_id,
            trace_id or outcome.trace_id or "",
            delay_seconds=seconds,
            # The client's fair-queue group travels with the copy.
            group_id=record.attributes.MessageGroupId,
        )
    except DependencyUnavailable:
        services.queue_records.postpone_in(record.eventSourceARN, record.receiptHandle, seconds)
        raise RetryLater(outcome.error or "deferred") from None


def _dead_letter(services: Services, outcome: DeliveryOutcome, trace_id: str | None) -> None:
    """Move a message whose retries ran out to the DLQ; its row already reads failed.

    The record itself is then acknowledged (deleted from the send queue).
    Should the DLQ refuse, the row still says failed with the reason, and an
    alarm says the DLQ copy is missing: nothing is dropped silently.
    """
    reason = outcome.error or "retries exhausted"
    try:
        services.dead_letters.add(outcome.message_id, trace_id or outcome.trace_id, reason)
    except DependencyUnavailable as error:
        services.signals.alarm(
            SignalKey.DEAD_LETTER_SEND_FAILED,
            f"message {outcome.message_id} failed for good but could not be moved to the DLQ",
            dimensions={"queue": "dead-letter"},
            context={"message_id": str(outcome.message_id), "error": error.message},
        )
        return
    services.signals.notice(
        SignalKey.MESSAGE_DEAD_LETTERED,
        f"message {outcome.message_id} moved to the dead-letter queue",
        dimensions={"queue": "dead-letter"},
        context={"message_id": str(outcome.message_id), "error": reason},
    )
