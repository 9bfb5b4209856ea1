"""The SQS worker: one batch of queued message ids in, partial failures out."""

from __future__ import annotations

import uuid
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Json

from mailroom.adapters.queue import TRACE_ID_ATTRIBUTE
from mailroom.bootstrap import Services
from mailroom.entrypoints.observability import logger
from mailroom.services.delivery import DeliveryResult, deliver_message


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
    processor = BatchProcessor(
        event_type=EventType.SQS, model=SendRecord, raise_on_entire_batch_failure=False
    )
    # One provider session per batch, so SMTP keeps its connection open
    # across the batch's messages.
    with services.provider() as provider:

        def handle(record: SendRecord) -> None:
            attribute = record.messageAttributes.get(TRACE_ID_ATTRIBUTE)
            message_id = record.body.message_id
            logger.append_keys(
                message_id=str(message_id),
                trace_id=attribute.stringValue if attribute else None,
                sqs_message_id=record.messageId,
            )
            try:
                outcome = deliver_message(
                    services.uow(),
                    services.templates,
                    services.renderer,
                    provider,
                    message_id=message_id,
                    max_attempts=services.settings.max_send_attempts,
                )
                logger.info(
                    f"delivery {outcome.result.value}",
                    extra={"result": outcome.result.value, "error": outcome.error},
                )
                if outcome.result is DeliveryResult.RETRY:
                    raise RetryLater(outcome.error or "retry")
            finally:
                logger.remove_keys(["message_id", "trace_id", "sqs_message_id"])

        return dict(
            process_partial_response(
                event=event, record_handler=handle, processor=processor, context=context
            )
        )
