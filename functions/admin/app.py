"""Operator routes under /admin, behind the admin bearer token."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.admin import AdminGate, admin_routes
from mailroom.entrypoints.api import create_api
from mailroom.entrypoints.observability import logger

app = create_api(
    admin_routes(default_services),
    max_request_bytes=lambda: default_services().settings.max_request_bytes,
    admin_gate=AdminGate(default_services),
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
