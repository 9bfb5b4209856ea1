"""SQS worker: render and send queued messages, report partial batch failures."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.worker import process_send_batch


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_send_batch(event, context, default_services())
