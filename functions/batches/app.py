"""/v1/batches: accept, start, follow, cancel and retry bulk batches (issue 17)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.api import create_api
from mailroom.entrypoints.batches import batch_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.observability import logger

app = create_api(
    [batch_routes(default_services)],
    # 10,000 recipients with their props do not fit the send function's limit.
    max_request_bytes=lambda: default_services().settings.batch_max_request_bytes,
    client_gate=ClientGate(default_services),
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
