"""Provider delivery webhooks: POST /webhooks/{provider}, GET /webhooks/health, and SNS records."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.webhooks import (
    create_webhooks_api,
    is_sns_event,
    process_sns_event,
    webhooks_function_routes,
)

app = create_webhooks_api(
    webhooks_function_routes(default_services),
    max_request_bytes=lambda: default_services().settings.webhook_max_request_bytes,
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # SES feedback also arrives by SNS invoking this function directly.
    if is_sns_event(event):
        return process_sns_event(event, default_services())
    return dict(app.resolve(event, context))
