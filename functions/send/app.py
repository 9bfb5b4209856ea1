"""POST /v1/send: validate, store and queue a message; /v1/templates; /v1/schedules."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.api import create_api, send_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.client_templates import client_template_routes
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.schedules import schedule_routes

app = create_api(
    [
        send_routes(default_services),
        client_template_routes(default_services),
        schedule_routes(default_services),
    ],
    max_request_bytes=lambda: default_services().settings.max_request_bytes,
    client_gate=ClientGate(default_services),
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
