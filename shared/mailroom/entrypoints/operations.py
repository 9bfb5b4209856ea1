"""Operator routes beside /health: /health/detailed, /ready, /live and /v1/info.

``/live`` answers while the process can answer at all (no dependency is
asked): a failing liveness probe restarts the container, which would not
bring PostgreSQL back. ``/ready`` says whether to send traffic here
(PostgreSQL, Redis, schema at head). ``/health/detailed`` is for people,
behind the admin token: every dependency with its latency, the queues, the
breakers and whether each provider answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import BaseModel, Field

from mailroom.bootstrap import Services
from mailroom.entrypoints import client_gate
from mailroom.entrypoints.api import API_VERSION
from mailroom.entrypoints.openapi_contract import ADMIN_TOKEN, JSON, answers
from mailroom.services import detailed_health

ServicesProvider = Callable[[], Services]


class ProbeView(BaseModel):
    ok: bool
    latency_ms: float
    error: str | None = None


class QueueView(BaseModel):
    depth: int | None = Field(description="Messages waiting (visible and delayed)")
    oldest_age_seconds: float | None = Field(
        description="The send queue: the oldest message still queued or sending; null if unknown"
    )
    error: str | None = None


class ProviderView(BaseModel):
    breaker: str | None = Field(description="closed, half-open or open; null if unknown")
    reachable: ProbeView = Field(
        description="SMTP: connect and EHLO; HTTPS APIs: any HTTP answer (cached per instance)"
    )


class MigrationsView(BaseModel):
    at_head: bool
    current: list[str]
    heads: list[str]
    error: str | None = None


class VersionView(BaseModel):
    api: str
    build: str


class DetailedHealthView(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    version: VersionView
    dependencies: dict[str, ProbeView]
    queues: dict[str, QueueView]
    providers: dict[str, ProviderView]
    migrations: MigrationsView
    notes: list[str] = Field(default_factory=list)


class ReadyView(BaseModel):
    ready: bool
    checks: dict[str, str]


class LiveView(BaseModel):
    status: Literal["ok"]


INFO_SECURITY: list[dict[str, list[str]]] = [{"apiKey": [], "apiSecret": []}, {"clientToken": []}]


def _json(status: int, body: BaseModel) -> Response[str]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body.model_dump_json()
    )


def operations_routes(services: ServicesProvider) -> Router:
    router = Router()

    @router.get(
        "/health/detailed",
        summary="Every dependency with its latency, the queues, breakers and providers",
        description=(
            "For operators (admin token). 503 when PostgreSQL or Redis is down; 200 with "
            '`"status": "degraded"` when only something else is wrong (a provider does not '
            "answer, a breaker is open, a queue cannot be read, the schema is behind). "
            "Provider reachability is cached per instance (PROVIDER_PROBE_TTL_SECONDS)."
        ),
        responses={
            **answers(200, "Available (ok or degraded)", DetailedHealthView),
            503: {
                "description": "PostgreSQL or Redis is down",
                "content": {JSON: {"model": DetailedHealthView}},
            },
        },
        tags=["operations"],
        security=ADMIN_TOKEN,
    )
    def health_detailed() -> Response[str]:
        from mailroom.entrypoints.admin import check_admin_token

        active = services()
        check_admin_token(router.current_event.headers or {}, active)
        report = _detailed(active)
        return _json(200 if report.status != "unavailable" else 503, report)

    @router.get(
        "/ready",
        summary="Whether this instance should take traffic (PostgreSQL, Redis, schema at head)",
        responses={
            **answers(200, "Ready", ReadyView),
            503: {"description": "Not ready", "content": {JSON: {"model": ReadyView}}},
        },
        tags=["operations"],
    )
    def ready() -> Response[str]:
        active = services()
        if active.probes is None:
            return _json(503, ReadyView(ready=False, checks={"probes": "not wired"}))
        is_ready, checks = detailed_health.ready(active.health_probes, active.probes)
        return _json(200 if is_ready else 503, ReadyView(ready=is_ready, checks=checks))

    @router.get(
        "/live",
        summary="Whether the process answers at all (no dependency is asked)",
        responses=answers(200, "Alive", LiveView),
        tags=["operations"],
    )
    def live() -> LiveView:
        return LiveView(status="ok")

    @router.get(
        "/v1/info",
        summary="The API's version and build",
        description="Any valid client key may ask; no scope is needed.",
        responses=answers(200, "The version", VersionView),
        tags=["operations"],
        security=INFO_SECURITY,
    )
    def info() -> VersionView:
        active = services()
        event = router.current_event
        client_gate.admitted(
            active,
            lambda: client_gate.presented(event.headers, client_gate.source_ip_of(event.raw_event)),
        )
        return VersionView(api=API_VERSION, build=active.settings.build_version)

    return router


def _detailed(services: Services) -> DetailedHealthView:
    settings = services.settings
    assert services.probes is not None

    def breaker_states() -> dict[str, str]:
        return services.providers.breaker_states()

    report = detailed_health.check(
        settings=settings,
        core_probes=services.health_probes,
        probes=services.probes,
        queue_age=detailed_health.oldest_queued_age(services.uow),
        breaker_states=breaker_states,
        metrics=services.metrics,
    )
    migrations = report.migrations
    return DetailedHealthView(
        status=report.status,
        version=VersionView(api=API_VERSION, build=settings.build_version),
        dependencies={
            name: ProbeView(ok=r.ok, latency_ms=r.latency_ms, error=r.error)
            for name, r in report.dependencies.items()
        },
        queues={
            name: QueueView(depth=q.depth, oldest_age_seconds=q.oldest_age_seconds, error=q.error)
            for name, q in report.queues.items()
        },
        providers={
            name: ProviderView(
                breaker=p.breaker,
                reachable=ProbeView(
                    ok=p.reachable.ok, latency_ms=p.reachable.latency_ms, error=p.reachable.error
                ),
            )
            for name, p in report.providers.items()
        },
        migrations=MigrationsView(
            at_head=migrations.at_head if migrations else False,
            current=sorted(migrations.current) if migrations else [],
            heads=sorted(migrations.heads) if migrations else [],
            error=report.migrations_error,
        ),
        notes=report.notes,
    )
