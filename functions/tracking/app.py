"""Open and click tracking: GET /t/{token}.gif (the pixel) and GET /c/{token} (a link)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.tracking import create_tracking_api, handle

app = create_tracking_api(default_services)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(app, event, context)
