"""The tracking consumer's handler: a doorbell from SQS, or its schedule, starts one drain.

Whatever the event (one or ten doorbell records, or the one-minute schedule
that catches a lost doorbell), the invocation drains the hit stream once
(services/tracking_ingest.py). A drain that fails leaves its entries pending
in the stream and reports every record failed, so SQS rings again after the
visibility timeout and the next drain takes them over.
"""

from __future__ import annotations

import uuid
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.adapters import tracing
from mailroom.bootstrap import Services
from mailroom.entrypoints.observability import logger
from mailroom.services.tracking_ingest import DrainLimits, drain

# This container's name in the stream's consumer group.
CONSUMER = f"ingest-{uuid.uuid4().hex[:12]}"
# Stop starting batches when less than this is left of the invocation.
_RESERVE_SECONDS = 10.0


def run_tracking_ingest(
    event: dict[str, Any], context: LambdaContext, services: Services
) -> dict[str, Any]:
    settings = services.settings
    run_seconds = settings.tracking_ingest_run_seconds
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None:
        run_seconds = max(0.0, min(run_seconds, int(remaining()) / 1000 - _RESERVE_SECONDS))
    assert services.tracking_store is not None
    assert services.hit_queue is not None
    records = [r for r in event.get("Records", []) if isinstance(r, dict)]
    try:
        with tracing.root_span("tracking.ingest", doorbells=len(records)):
            report = drain(
                services.tracking_store,
                services.hit_queue,
                services.tracking_config,
                consumer=CONSUMER,
                limits=DrainLimits(
                    batch_size=settings.tracking_ingest_batch_size, run_seconds=run_seconds
                ),
                dead_letters=services.ingest_doorbell,
            )
    except Exception:
        logger.exception("the tracking drain failed; its entries stay pending")
        if not records:
            raise
        return {"batchItemFailures": [{"itemIdentifier": r.get("messageId")} for r in records]}
    counts = {
        "batches": report.batches,
        "entries": report.entries,
        "hits_written": report.hits_written,
        "events_written": report.events_written,
        "unreadable": report.unreadable,
        "dead_lettered": report.dead_lettered,
        "continued": report.continued,
    }
    logger.info("tracking hits drained", extra=counts)
    if records:
        return {"batchItemFailures": []}
    return counts
