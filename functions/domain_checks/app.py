"""Scheduled re-check of sending domains' DNS records (issue 16)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.domain_checks import run_domain_checks
from mailroom.entrypoints.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_domain_checks(event, context, default_services())
