"""/v1/suppressions: a client manages its own suppression list (scope ``suppression:manage``).

A client sees and changes only entries with its own client id. The global
list (an operator's) shows through as ``"status": "suppressed (global)"``
with nothing else about the entry: no reason, note, source or dates, and no
other client's entries at all. The address to remove travels in the query
string (``DELETE /v1/suppressions?address=``), not the path: an address may
hold ``/``, ``+``, ``%`` and non-ASCII characters, which a path segment and
API Gateway's routing do not carry intact, while a percent-encoded query
value carries any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mailroom.adapters.db.feedback_repositories import SuppressionFilter
from mailroom.bootstrap import Services
from mailroom.domain.feedback import Suppression, SuppressionReason, SuppressionScope
from mailroom.domain.suppression_files import CLIENT_EXPORT_FIELDS, FileFormat
from mailroom.domain.tenancy import Actor, Caller, Scope
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.entrypoints.suppression_bulk import (
    IMPORT_BODY,
    ImportReportView,
    export_answers,
    export_file,
    import_answers,
    import_file,
)
from mailroom.services import suppression as suppressions

ServicesProvider = Callable[[], Services]

GLOBAL_STATUS: Literal["suppressed (global)"] = "suppressed (global)"
SECURITY = client_key(Scope.SUPPRESSION_MANAGE)


class ClientSuppressionView(BaseModel):
    address: str
    scope: SuppressionScope
    status: Literal["suppressed", "expired", "suppressed (global)"] = Field(
        description="`suppressed (global)`: on the operators' list; nothing more is shown of it"
    )
    reason: SuppressionReason | None = Field(description="null for a global entry")
    note: str | None
    source: str | None
    created_at: datetime | None
    updated_at: datetime | None
    expires_at: datetime | None


class ClientSuppressionPage(BaseModel):
    suppressions: list[ClientSuppressionView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class ClientSuppressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=320, examples=["ada@example.com"])
    reason: SuppressionReason = SuppressionReason.MANUAL
    expires_at: AwareDatetime | None = Field(default=None, description="Omit for no expiry.")
    note: str | None = Field(default=None, max_length=500)


class ClientSuppressionRemoved(BaseModel):
    removed: int
    globally_suppressed: bool = Field(
        description="The address is on the global list too, so mail to it is still refused"
    )


def client_suppression_routes(services: ServicesProvider) -> Router:
    # Imported here: api.py imports the send and status routes at cold start.
    from mailroom.entrypoints.api import caller_of

    router = Router()

    def caller(active: Services) -> tuple[Caller, Actor]:
        who = caller_of(router, active, Scope.SUPPRESSION_MANAGE)
        identity = (router.current_event.raw_event.get("requestContext") or {}).get("identity")
        source_ip = (identity or {}).get("sourceIp")
        # The key, never its secret: the audit log's actor for a client's change.
        return who, Actor(f"key:{who.key_id}", str(source_ip) if source_ip else None)

    @router.get(
        "/v1/suppressions",
        summary="The client's suppression list, and the global entries that apply to it",
        description=(
            "Oldest first, with cursor paging. The client's own entries in full; a global "
            "entry only as its address with status `suppressed (global)`. A `reason` filter "
            "lists the client's own entries only; `include_expired` adds its expired ones."
        ),
        responses=answers(
            200,
            "One page",
            ClientSuppressionPage,
            errors={422: "validation_error: a bad filter, or a cursor this API did not return"},
        ),
        tags=["suppressions"],
        security=SECURITY,
    )
    def list_suppressions(
        address: Annotated[str | None, Query(max_length=320)] = None,
        reason: Annotated[SuppressionReason | None, Query()] = None,
        include_expired: Annotated[bool, Query()] = False,
        cursor: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=suppressions.MAX_PAGE)] = 100,
    ) -> ClientSuppressionPage:
        active = services()
        who, _ = caller(active)
        page = suppressions.client_suppressions(
            active.uow(),
            client_id=who.client.id,
            address=address,
            reason=reason,
            include_expired=include_expired,
            cursor=cursor,
            limit=limit,
        )
        return ClientSuppressionPage(
            suppressions=[client_view(entry) for entry in page.entries],
            next_cursor=page.next_cursor,
        )

    @router.post(
        "/v1/suppressions",
        status_code=201,
        summary="Suppress an address for this client's mail (or replace its entry)",
        responses=answers(
            201,
            "Stored",
            ClientSuppressionView,
            errors={422: "validation_error: not an address, or expires_at in the past"},
        ),
        tags=["suppressions"],
        security=SECURITY,
    )
    def add_suppression(entry: Annotated[ClientSuppressionCreate, Body()]) -> Response[str]:
        active = services()
        who, actor = caller(active)
        created = suppressions.add_suppression(
            active.uow(),
            address=entry.address,
            client_id=who.client.id,
            reason=entry.reason,
            expires_at=entry.expires_at,
            note=entry.note,
            source="api",
            actor=actor,
        )
        logger.info("client suppression added", extra={"reason": created.reason.value})
        return Response(
            status_code=201,
            content_type=content_types.APPLICATION_JSON,
            body=client_view(created).model_dump_json(),
        )

    @router.delete(
        "/v1/suppressions",
        summary="Lift the client's own entry for an address (percent-encode it in the query)",
        responses=answers(
            200,
            "Removed",
            errors={
                404: "suppression_not_found: no entry for the address on any list",
                409: (
                    "suppression_global: only the global list holds the address; an operator "
                    "lifts it (the client has no entry of its own)"
                ),
            },
        ),
        tags=["suppressions"],
        security=SECURITY,
    )
    def remove_suppression(
        address: Annotated[str, Query(max_length=320)],
    ) -> ClientSuppressionRemoved:
        active = services()
        who, actor = caller(active)
        removal = suppressions.remove_client_suppression(
            active.uow(), address=address, client_id=who.client.id, actor=actor
        )
        logger.info("client suppression removed")
        return ClientSuppressionRemoved(
            removed=removal.removed, globally_suppressed=removal.globally_suppressed
        )

    @router.post(
        "/v1/suppressions/import",
        summary="Add or replace many of the client's entries from a CSV or JSON-lines file",
        description=(
            "Each good line is upserted (a re-import changes nothing); each bad line is "
            "reported with its line number and the rest are imported. With `atomic=true` a "
            "single bad line refuses the whole file and nothing is written."
        ),
        responses=import_answers("are on the client's list"),
        openapi_extensions=IMPORT_BODY.openapi_extensions(),
        tags=["suppressions"],
        security=SECURITY,
    )
    def import_suppressions(atomic: Annotated[bool, Query()] = False) -> ImportReportView:
        active = services()
        who, actor = caller(active)
        return import_file(
            router,
            active.uow(),
            client_id=who.client.id,
            actor=actor,
            atomic=atomic,
            source="import",
        )

    @router.get(
        "/v1/suppressions/export",
        summary="The client's own entries as a file that imports back as it is",
        responses=export_answers("The client's unexpired entries"),
        tags=["suppressions"],
        security=SECURITY,
    )
    def export_suppressions(
        format_: Annotated[Literal["csv", "jsonl"], Query(alias="format")] = "csv",
        cursor: Annotated[str | None, Query(max_length=40)] = None,
    ) -> Response[str]:
        active = services()
        who, _ = caller(active)
        where = SuppressionFilter(scope=SuppressionScope.CLIENT, client_id=who.client.id)
        return export_file(active.uow(), where, FileFormat(format_), CLIENT_EXPORT_FIELDS, cursor)

    return router


def client_view(entry: Suppression) -> ClientSuppressionView:
    """What a client is shown of an entry: all of its own, only the address of a global one."""
    if entry.client_id is None:
        return ClientSuppressionView(
            address=entry.address,
            scope=SuppressionScope.GLOBAL,
            status=GLOBAL_STATUS,
            reason=None,
            note=None,
            source=None,
            created_at=None,
            updated_at=None,
            expires_at=None,
        )
    return ClientSuppressionView(
        address=entry.address,
        scope=SuppressionScope.CLIENT,
        status="suppressed" if entry.is_active(datetime.now(UTC)) else "expired",
        reason=entry.reason,
        note=entry.note,
        source=entry.source,
        created_at=entry.created_at,
        updated_at=entry.updated_at,
        expires_at=entry.expires_at,
    )
