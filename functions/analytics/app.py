"""Scheduled analytics roll-up and reputation check (issue 21 items 4 and 5)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.analytics_rollup import run_roll_up
from mailroom.entrypoints.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_roll_up(event, context, default_services())
