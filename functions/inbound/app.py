"""Bounce mail (SES receipt rule → S3 → this function) and one-click unsubscribe (/u/{token})."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.adapters.inbound_mail import read_s3_object
from mailroom.bootstrap import default_services
from mailroom.entrypoints.inbound import (
    inbound_function_routes,
    is_ses_receipt_event,
    process_ses_event,
)
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.webhooks import create_webhooks_api

# The webhooks resolver: any media type (RFC 8058 clients post form data).
app = create_webhooks_api(
    inbound_function_routes(default_services),
    max_request_bytes=lambda: default_services().settings.max_request_bytes,
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_ses_receipt_event(event):
        return process_ses_event(event, default_services(), read_s3_object)
    return dict(app.resolve(event, context))
