"""Health routes: whether the systems a function depends on answer."""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel

from mailroom.bootstrap import Services
from mailroom.entrypoints.openapi_contract import JSON, answers
from mailroom.services import backlog
from mailroom.services.health import check_health


class BacklogView(BaseModel):
    """Issue 7: mail failed for good (DLQ) and how late the oldest unsent message is.

    Issue 18: how far past its time the oldest still-scheduled message or batch is.
    """

    dead_letter_depth: int | None
    oldest_queued_age_seconds: float | None
    oldest_overdue_scheduled_seconds: float | None = None


class HealthView(BaseModel):
    status: str
    checks: dict[str, str]
    backlog: BacklogView | None = None


def health_answers() -> dict[int, OpenAPIResponse]:
    """Health answers 503 with its own report, not the error body: a probe reads the checks."""
    return {
        **answers(200, "Healthy", HealthView),
        503: {"description": "A dependency is down", "content": {JSON: {"model": HealthView}}},
    }


def component_health_routes(
    path: str, services: Callable[[], Services], *, with_backlog: bool = False
) -> Router:
    """A health route for a function other than the send API's (which has /health)."""
    router = Router()
    summary = "Whether this function's dependencies answer"
    if with_backlog:
        summary += "; DLQ depth and oldest queued message age"

    @router.get(path, summary=summary, responses=health_answers(), tags=["operations"])
    def health() -> Response[str]:
        return health_response(services(), with_backlog=with_backlog)

    return router


def health_response(services: Services, *, with_backlog: bool = False) -> Response[str]:
    report = check_health(services.health_probes)
    view = HealthView(status="ok" if report.healthy else "unavailable", checks=report.checks)
    if with_backlog:
        # Reported, not judged: a backlog does not make the service unhealthy
        # (the DLQ alarm in template.yaml is what pages someone).
        measured = backlog.measure(services.uow(), services.dead_letters, now=services.clock.now())
        view.backlog = BacklogView(
            dead_letter_depth=measured.dead_letter_depth,
            oldest_queued_age_seconds=measured.oldest_queued_age_seconds,
            oldest_overdue_scheduled_seconds=measured.oldest_overdue_scheduled_seconds,
        )
    return Response(
        status_code=200 if report.healthy else 503,
        content_type=content_types.APPLICATION_JSON,
        body=view.model_dump_json(),
    )
