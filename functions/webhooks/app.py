"""Provider delivery webhooks. This issue serves only the health route."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.api import create_api
from mailroom.entrypoints.health import component_health_routes
from mailroom.entrypoints.observability import logger

app = create_api(
    [component_health_routes("/webhooks/health", default_services)],
    max_request_bytes=lambda: default_services().settings.max_request_bytes,
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
