"""Scheduled: relay the webhook outbox and queue deliveries that fell due (issue 19)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.webhook_dispatcher import run_webhook_tick


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_webhook_tick(event, context, default_services())
