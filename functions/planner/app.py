"""SQS planner: write a bulk batch's messages in chunks and enqueue them (issue 17)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.planner import process_planner_batch


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_planner_batch(event, context, default_services())
