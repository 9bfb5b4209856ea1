"""The planner: batch ids in from its SQS queue, message rows and send-queue records out.

One record is one batch to plan, from its cursor on. A run stops early when
the function's time is nearly over and asks for another run on its own
queue; a run that crashes is retried by SQS (then the DLQ), and the cursor
makes every run continue where the last one stopped.
"""

from __future__ import annotations

import time
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

from mailroom.bootstrap import Services
from mailroom.entrypoints.observability import logger
from mailroom.services.batches import plan_batch

# Stop starting chunks when less than this is left of the invocation.
_RESERVE_MILLISECONDS = 30_000


class PlanningRequest(BaseModel):
    batch_id: uuid.UUID


class PlannerRecord(SqsRecordModel):
    body: Json[PlanningRequest]


def process_planner_batch(
    event: dict[str, Any], context: LambdaContext, services: Services
) -> dict[str, Any]:
    processor = BatchProcessor(event_type=EventType.SQS, model=PlannerRecord)
    stop_at = time.monotonic() + services.settings.planner_run_seconds

    def keep_going() -> bool:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is not None and int(remaining()) <= _RESERVE_MILLISECONDS:
            return False
        return time.monotonic() < stop_at

    def handle(record: PlannerRecord) -> None:
        batch_id = record.body.batch_id
        logger.append_keys(batch_id=str(batch_id))
        result = plan_batch(
            services.uow(),
            services.queue,
            services.recipient_files,
            batch_id=batch_id,
            chunk_size=services.settings.planner_chunk_size,
            keep_going=keep_going,
            now=services.clock.now(),
            quota=services.quota,
        )
        logger.info(
            "batch planned" if result.done else "batch planning continues",
            extra={"planned": result.planned, "enqueued": result.enqueued},
        )
        if not result.done:
            # A scheduled batch's record that came early waits out the rest (issue 18).
            services.planner_queue.request_planning(
                batch_id, "planner", delay_seconds=result.wait_seconds
            )

    return dict(
        process_partial_response(
            event=event, record_handler=handle, processor=processor, context=context
        )
    )
