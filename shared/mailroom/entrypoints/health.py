"""Health routes: whether the systems a function depends on answer."""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import BaseModel

from mailroom.bootstrap import Services
from mailroom.services.health import check_health


class HealthView(BaseModel):
    status: str
    checks: dict[str, str]


def component_health_routes(path: str, services: Callable[[], Services]) -> Router:
    """A health route for the functions whose real routes later issues add."""
    router = Router()

    @router.get(path, summary="Whether this function's dependencies answer", tags=["operations"])
    def health() -> Response[str]:
        return health_response(services())

    return router


def health_response(services: Services) -> Response[str]:
    report = check_health(services.health_probes)
    view = HealthView(status="ok" if report.healthy else "unavailable", checks=report.checks)
    return Response(
        status_code=200 if report.healthy else 503,
        content_type=content_types.APPLICATION_JSON,
        body=view.model_dump_json(),
    )
