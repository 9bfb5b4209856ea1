"""The tracking consumer: drains queued hits into PostgreSQL in batches (issue 21 item 3)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.tracking_ingest import run_tracking_ingest


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_tracking_ingest(event, context, default_services())
