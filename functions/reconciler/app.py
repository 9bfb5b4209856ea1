"""Scheduled reconciler: re-enqueue stuck messages, end exhausted ones (issue 7)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.reconciler import run_reconciler


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_reconciler(event, context, default_services())
