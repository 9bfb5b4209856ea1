"""/v1/messages, suppressions, api-keys, domains, queues, smtp-configs, webhooks, events,
analytics and metrics."""

from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import default_services
from mailroom.entrypoints.analytics import analytics_routes
from mailroom.entrypoints.api import create_api, docs_api, status_routes
from mailroom.entrypoints.api_keys import api_key_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.client_suppressions import client_suppression_routes
from mailroom.entrypoints.client_webhooks import webhook_routes
from mailroom.entrypoints.domains import domain_routes
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.operations import operations_routes
from mailroom.entrypoints.queues import queue_routes
from mailroom.entrypoints.schedules import message_schedule_routes
from mailroom.entrypoints.smtp_configs import smtp_config_routes

app = create_api(
    [
        status_routes(default_services),
        message_schedule_routes(default_services),
        client_suppression_routes(default_services),
        api_key_routes(default_services),
        domain_routes(default_services),
        webhook_routes(default_services),
        operations_routes(default_services),
        smtp_config_routes(default_services),
        queue_routes(default_services),
        analytics_routes(default_services),
    ],
    max_request_bytes=lambda: default_services().settings.max_request_bytes,
    client_gate=ClientGate(default_services),
)
DOCS_PATHS = frozenset({"/docs", "/openapi.json"})


@cache
def docs() -> APIGatewayRestResolver:
    # Built on the first docs request: it needs every function's routes, and
    # a cold start for GET /v1/messages should not import them (issue 8).
    return docs_api(default_services)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    resolver = docs() if event.get("resource") in DOCS_PATHS else app
    return resolver.resolve(event, context)
