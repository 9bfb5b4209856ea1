"""/v1/analytics, /v1/metrics and their operator views under /admin (issue 21 items 4-6).

Client routes take scope ``analytics:read`` and see their own client only;
the admin routes see every client (or one, by ``client_id``). Everything is
read from the rollups (services/analytics.py), never from messages.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from mailroom.bootstrap import Services
from mailroom.domain.analytics import (
    MAX_DAILY_RANGE,
    MAX_HOURLY_RANGE,
    AnalyticsQuery,
    Granularity,
    add_counts,
    empty_counts,
    hour_of,
    parse_query,
    rates,
)
from mailroom.domain.errors import InvalidRequest
from mailroom.domain.tenancy import Scope
from mailroom.entrypoints.openapi_contract import ADMIN_TOKEN, answers, client_key
from mailroom.services import analytics, clients, reputation

ServicesProvider = Callable[[], Services]
SECURITY = client_key(Scope.ANALYTICS_READ)
TAGS = ["analytics"]
ADMIN_TAGS = ["admin: analytics"]
VIEWS = ("overview", "delivery", "engagement", "bounces")

_INVALID = (
    "validation_error: from/to not ISO 8601, from not before to, a range over "
    f"{MAX_HOURLY_RANGE.days} days by hour or {MAX_DAILY_RANGE.days} days by day "
    "(range_too_long), tz not an IANA zone (unknown_timezone), an unknown query "
    "parameter (unknown_filter), tag combined with another filter, a bad "
    "recipient_group or queue"
)
_VIEW_DESCRIPTION = (
    "Counts and rates as a time series by `hour` or `day` over `from`..`to` (ISO 8601; "
    "a date or a time without an offset is read in `tz`), in the IANA zone `tz` (UTC "
    "by default). Filters: `queue` (a queue id or `default`), `template`, `tag`, "
    "`sending_domain`, `recipient_group` (gmail, outlook, yahoo, other); tag combines "
    "with no other filter. `test=true` answers test-mode traffic instead of live. "
    "Rollups are per UTC hour: any whole-hour zone is exact; a half- or quarter-hour "
    "zone is exact by hour, and by day its days start at 00:30 (00:45) local "
    "(`range.exact` is false). Bounce rate is hard bounces over sent (as SES counts). "
    "Counts lag the events by at most the roll-up period (one minute)."
)

From = Annotated[
    str | None,
    Query(alias="from", max_length=40, description="Start, ISO 8601 (default: to minus 30 days)"),
]
To = Annotated[str | None, Query(max_length=40, description="End, ISO 8601 (default: now)")]
GranularityParam = Annotated[Granularity | None, Query(description="hour or day (default)")]
Tz = Annotated[str | None, Query(max_length=64, description="IANA zone, e.g. Europe/Berlin")]
Filter = Annotated[str | None, Query(max_length=255)]
TestParam = Annotated[str | None, Query(max_length=5, description="true: test-mode traffic")]


class AnalyticsRange(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    granularity: Granularity
    tz: str
    exact: bool = Field(description="false: a day bucket in a half-hour zone, see above")


class AnalyticsPoint(BaseModel):
    """One bucket: its local start and the view's counts and rates."""

    model_config = ConfigDict(extra="allow")

    start: str


class AnalyticsReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    view: str
    range: AnalyticsRange
    filters: dict[str, str]
    test: bool
    totals: dict[str, int | float | None]
    series: list[AnalyticsPoint]
    client_id: str | None = None


class ReputationReport(BaseModel):
    """State, score (100 clean, 0 at the pause line), window rates and what comes next."""

    model_config = ConfigDict(extra="allow")

    client_id: str
    state: str
    score: int


class ReputationList(BaseModel):
    clients: list[dict[str, Any]]
    policy: dict[str, Any]


class MetricsSummary(BaseModel):
    """Totals and rates over the last hour, 24 hours, 7 and 30 days."""

    model_config = ConfigDict(extra="allow")

    generated_at: str
    windows: dict[str, dict[str, int | float | None]]


def _json(body: Mapping[str, Any]) -> Response[str]:
    return Response(
        status_code=200, content_type=content_types.APPLICATION_JSON, body=json.dumps(body)
    )


def _params(router: Router) -> dict[str, str]:
    return {str(k): str(v) for k, v in (router.current_event.query_string_parameters or {}).items()}


def _query(
    router: Router, active: Services, client_id: uuid.UUID | None, **extra: Any
) -> AnalyticsQuery:
    params = _params(router)
    params.pop("client_id", None)
    return parse_query(
        params, now=active.clock.now(), client_id=client_id, allowed=extra.get("allowed", ())
    )


WINDOWS = {
    "last_hour": timedelta(hours=1),
    "last_24h": timedelta(hours=24),
    "last_7d": timedelta(days=7),
    "last_30d": timedelta(days=30),
}


def metrics_summary(active: Services, client_id: uuid.UUID | None) -> dict[str, Any]:
    """Seed B's metrics: totals and rates per window, from one 30-day read of the rollups."""
    now = active.clock.now()
    end = hour_of(now) + timedelta(hours=1)
    query = AnalyticsQuery(
        start=end - WINDOWS["last_30d"] - timedelta(hours=1),
        end=end,
        granularity=Granularity.HOUR,
        tz=UTC_ZONE,
        client_id=client_id,
    )
    with active.uow() as uow:
        hours = uow.analytics.hourly(query)
    windows: dict[str, dict[str, int | float | None]] = {}
    for name, span in WINDOWS.items():
        # Whole hours: the current hour counts in every window.
        since = end - span
        counts = empty_counts()
        for hour, found in hours.items():
            if hour >= since:
                add_counts(counts, found)
        windows[name] = {**counts, **rates(counts)}
    return {"generated_at": now.isoformat(), "windows": windows}


UTC_ZONE = ZoneInfo("UTC")


def analytics_routes(services: ServicesProvider) -> Router:
    # Imported here: api.py imports the send and status routes at cold start.
    from mailroom.entrypoints.api import caller_of

    router = Router()

    def client_id(active: Services) -> uuid.UUID:
        return caller_of(router, active, Scope.ANALYTICS_READ).client.id

    def view_route(view: str) -> None:
        @router.get(
            f"/v1/analytics/{view}",
            summary=f"Analytics: {view}",
            description=_VIEW_DESCRIPTION,
            responses=answers(200, "The series", AnalyticsReport, errors={422: _INVALID}),
            tags=TAGS,
            security=SECURITY,
        )
        def analytics_view(
            from_: From = None,
            to: To = None,
            granularity: GranularityParam = None,
            tz: Tz = None,
            queue: Filter = None,
            template: Filter = None,
            tag: Filter = None,
            sending_domain: Filter = None,
            recipient_group: Filter = None,
            test: TestParam = None,
        ) -> Response[str]:
            active = services()
            query = _query(router, active, client_id(active))
            return _json(analytics.report(active.uow(), query, view))

    for view in VIEWS:
        view_route(view)

    @router.get(
        "/v1/analytics/reputation",
        summary="Analytics: reputation, and what would happen next",
        description=(
            "The client's rolling bounce and complaint rates over its window (the last "
            "10,000 live sends or 7 days, whichever is shorter; nothing is decided under "
            "200 sends), the state they put it in (ok, warn 2.5 %/0.08 %, throttle "
            "4 %/0.1 %, pause 5 %/0.3 %), a score, each sending domain's own, and the "
            "next state with the rates that reach it. Judged every minute; test mode "
            "traffic is not counted."
        ),
        responses=answers(200, "The reputation", ReputationReport),
        tags=TAGS,
        security=SECURITY,
    )
    def client_reputation() -> Response[str]:
        active = services()
        return _json(reputation.view(active.uow(), client_id(active)))

    @router.get(
        "/v1/metrics",
        summary="The client's sending metrics: last hour, 24 hours, 7 and 30 days",
        description=(
            "Live traffic totals and rates per window (sent, delivered, bounces, "
            "complaints, opens, clicks...), and the reputation state. From the rollups."
        ),
        responses=answers(200, "The summary", MetricsSummary),
        tags=TAGS,
        security=SECURITY,
    )
    def client_metrics() -> Response[str]:
        active = services()
        owner = client_id(active)
        summary = metrics_summary(active, owner)
        stored = reputation.view(active.uow(), owner)
        summary["reputation"] = {"state": stored["state"], "score": stored["score"]}
        return _json(summary)

    return router


def admin_analytics_routes(services: ServicesProvider) -> Router:
    from mailroom.entrypoints.admin import require_admin

    router = Router()

    def admin() -> Services:
        active = services()
        require_admin(router, active)
        return active

    def admin_view_route(view: str) -> None:
        @router.get(
            f"/admin/analytics/{view}",
            summary=f"Analytics across clients: {view}",
            description=_VIEW_DESCRIPTION + " `client_id` narrows it to one client.",
            responses=answers(200, "The series", AnalyticsReport, errors={422: _INVALID}),
            tags=ADMIN_TAGS,
            security=ADMIN_TOKEN,
        )
        def admin_analytics_view(
            client_id: Annotated[str | None, Query(max_length=64)] = None,
            from_: From = None,
            to: To = None,
            granularity: GranularityParam = None,
            tz: Tz = None,
            queue: Filter = None,
            template: Filter = None,
            tag: Filter = None,
            sending_domain: Filter = None,
            recipient_group: Filter = None,
            test: TestParam = None,
        ) -> Response[str]:
            active = admin()
            query = _query(router, active, _client_id(client_id), allowed=("client_id",))
            return _json(analytics.report(active.uow(), query, view))

    for view in VIEWS:
        admin_view_route(view)

    @router.get(
        "/admin/reputation",
        summary="Every judged client's reputation, paused and throttled first",
        responses=answers(200, "The list", ReputationList),
        tags=ADMIN_TAGS,
        security=ADMIN_TOKEN,
    )
    def admin_reputations() -> Response[str]:
        active = admin()
        return _json({"clients": reputation.overview(active.uow()), "policy": reputation.policy()})

    @router.get(
        "/admin/clients/<client_ref>/reputation",
        summary="One client's reputation",
        responses=answers(
            200,
            "The reputation",
            ReputationReport,
            errors={404: "client_not_found: no client with that id or API key"},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_TOKEN,
    )
    def admin_client_reputation(client_ref: Annotated[str, Path(max_length=64)]) -> Response[str]:
        active = admin()
        client = clients.find_client(active.uow(), client_ref)
        return _json(reputation.view(active.uow(), client.id))

    @router.post(
        "/admin/clients/<client_ref>/reputation/lift",
        summary="Lift a reputation pause (or throttle)",
        description=(
            "The client's live sends are accepted again at once on every instance; its "
            "reputation window restarts now (what came before is not held against it "
            "again). Audited as reputation.lift."
        ),
        responses=answers(
            200,
            "The reputation, lifted",
            ReputationReport,
            errors={404: "client_not_found: no client with that id or API key"},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_TOKEN,
    )
    def admin_lift(client_ref: Annotated[str, Path(max_length=64)]) -> Response[str]:
        active = services()
        actor = require_admin(router, active)
        client = clients.find_client(active.uow(), client_ref)
        reputation.lift(
            active.uow(), active.credential_versions, client.id, actor=actor, now=active.clock.now()
        )
        return _json(reputation.view(active.uow(), client.id))

    @router.get(
        "/admin/metrics",
        summary="Operator-wide sending metrics: every client's totals, reputations, roll-up lag",
        responses=answers(200, "The summary", MetricsSummary),
        tags=ADMIN_TAGS,
        security=ADMIN_TOKEN,
    )
    def admin_metrics() -> Response[str]:
        active = admin()
        summary = metrics_summary(active, None)
        states = reputation.overview(active.uow())
        by_state: dict[str, int] = {}
        for entry in states:
            by_state[entry["state"]] = by_state.get(entry["state"], 0) + 1
        with active.uow() as uow:
            pending = uow.analytics.pending()
        summary["reputation"] = {
            "clients_by_state": by_state,
            "paused": [e for e in states if e["state"] == "pause"],
            "throttled": [e for e in states if e["state"] == "throttle"],
        }
        summary["roll_up_backlog"] = pending
        return _json(summary)

    return router


def _client_id(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidRequest(
            "client_id: a client id (UUID)",
            details=[{"field": "client_id", "type": "invalid"}],
        ) from None
