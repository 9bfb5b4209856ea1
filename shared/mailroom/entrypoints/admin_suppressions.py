"""Admin routes for the suppression list: list, add, remove, import and export."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mailroom.adapters.db.feedback_repositories import SuppressionFilter
from mailroom.bootstrap import Services
from mailroom.domain.feedback import Suppression, SuppressionReason, SuppressionScope
from mailroom.domain.suppression_files import ADMIN_EXPORT_FIELDS, FileFormat
from mailroom.domain.tenancy import KeyKind
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers
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


class SuppressionView(BaseModel):
    id: int | None
    address: str
    scope: SuppressionScope
    client_id: uuid.UUID | None
    reason: SuppressionReason
    source: str | None
    note: str | None
    created_at: datetime | None
    updated_at: datetime | None
    expires_at: datetime | None
    mode: KeyKind = Field(
        default=KeyKind.LIVE,
        description="test: created by test traffic; screens that client's test mail only.",
    )


class SuppressionPageView(BaseModel):
    suppressions: list[SuppressionView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class SuppressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=320, examples=["ada@example.com"])
    client_id: uuid.UUID | None = Field(
        default=None, description="Only this client's mail; omit for every client."
    )
    reason: SuppressionReason = SuppressionReason.MANUAL
    expires_at: AwareDatetime | None = Field(default=None, description="Omit for no expiry.")
    note: str | None = Field(default=None, max_length=500)


class SuppressionRemoved(BaseModel):
    removed: int


def suppression_routes(services: ServicesProvider) -> Router:
    # admin.py lists this router among its own, so its helpers come in here.
    from mailroom.entrypoints.admin import ADMIN_SECURITY, require_admin

    router = Router()

    @router.get(
        "/admin/suppressions",
        summary="Suppression entries, oldest first; page through all of them to export",
        responses=answers(
            200, "One page", errors={422: "validation_error: a bad filter or cursor"}
        ),
        tags=["suppressions"],
        security=ADMIN_SECURITY,
    )
    def list_suppressions(
        scope: Annotated[Literal["global", "client"] | None, Query()] = None,
        client_id: Annotated[uuid.UUID | None, Query()] = None,
        address: Annotated[str | None, Query(max_length=320)] = None,
        reason: Annotated[SuppressionReason | None, Query()] = None,
        include_expired: Annotated[bool, Query()] = False,
        cursor: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=suppressions.MAX_PAGE)] = 100,
    ) -> SuppressionPageView:
        active = services()
        require_admin(router, active)
        chosen = SuppressionScope(scope) if scope else None
        where = SuppressionFilter(
            scope=SuppressionScope.CLIENT if client_id else chosen,
            client_id=client_id,
            address=address,
            reason=reason,
            include_expired=include_expired,
        )
        page = suppressions.list_suppressions(active.uow(), where, cursor=cursor, limit=limit)
        return SuppressionPageView(
            suppressions=[_view(entry) for entry in page.entries], next_cursor=page.next_cursor
        )

    @router.post(
        "/admin/suppressions",
        status_code=201,
        summary="Add (or replace) a suppression entry",
        responses=answers(
            201,
            "Stored",
            SuppressionView,
            errors={422: "validation_error: not an address, or an unknown client_id"},
        ),
        tags=["suppressions"],
        security=ADMIN_SECURITY,
    )
    def add_suppression(entry: Annotated[SuppressionCreate, Body()]) -> Response[str]:
        active = services()
        actor = require_admin(router, active)
        created = suppressions.add_suppression(
            active.uow(),
            address=entry.address,
            client_id=entry.client_id,
            reason=entry.reason,
            expires_at=entry.expires_at,
            note=entry.note,
            actor=actor,
        )
        logger.info(
            "suppression added",
            extra={"scope": created.scope.value, "reason": created.reason.value},
        )
        return Response(
            status_code=201,
            content_type=content_types.APPLICATION_JSON,
            body=_view(created).model_dump_json(),
        )

    @router.delete(
        "/admin/suppressions",
        summary="Remove an address's entry: the global one, or one client's",
        responses=answers(
            200, "Removed", errors={404: "suppression_not_found: no such entry to remove"}
        ),
        tags=["suppressions"],
        security=ADMIN_SECURITY,
    )
    def remove_suppression(
        address: Annotated[str, Query(max_length=320)],
        client_id: Annotated[uuid.UUID | None, Query()] = None,
    ) -> SuppressionRemoved:
        active = services()
        actor = require_admin(router, active)
        removed = suppressions.remove_suppression(
            active.uow(), address=address, client_id=client_id, actor=actor
        )
        logger.info("suppression removed", extra={"global": client_id is None})
        return SuppressionRemoved(removed=removed)

    @router.post(
        "/admin/suppressions/import",
        summary="Add or replace many entries of one client's list, or the global list, from a file",
        description=(
            "`client_id` names the client whose list the file goes into; omit it for the "
            "global list. Each good line is upserted, each bad line reported with its line "
            "number; with `atomic=true` a single bad line refuses the file. One audit row "
            "per import, with the counts."
        ),
        responses=import_answers("are on the list"),
        openapi_extensions=IMPORT_BODY.openapi_extensions(),
        tags=["suppressions"],
        security=ADMIN_SECURITY,
    )
    def import_suppressions(
        client_id: Annotated[uuid.UUID | None, Query()] = None,
        atomic: Annotated[bool, Query()] = False,
    ) -> ImportReportView:
        active = services()
        actor = require_admin(router, active)
        return import_file(
            router,
            active.uow(),
            client_id=client_id,
            actor=actor,
            atomic=atomic,
            source="admin-import",
        )

    @router.get(
        "/admin/suppressions/export",
        summary="Entries as a file (CSV or JSON lines) that imports back as it is",
        responses=export_answers("The entries the filters select"),
        tags=["suppressions"],
        security=ADMIN_SECURITY,
    )
    def export_suppressions(
        scope: Annotated[Literal["global", "client"] | None, Query()] = None,
        client_id: Annotated[uuid.UUID | None, Query()] = None,
        format_: Annotated[Literal["csv", "jsonl"], Query(alias="format")] = "csv",
        include_expired: Annotated[bool, Query()] = False,
        cursor: Annotated[str | None, Query(max_length=40)] = None,
    ) -> Response[str]:
        active = services()
        require_admin(router, active)
        chosen = SuppressionScope(scope) if scope else None
        where = SuppressionFilter(
            scope=SuppressionScope.CLIENT if client_id else chosen,
            client_id=client_id,
            include_expired=include_expired,
        )
        return export_file(active.uow(), where, FileFormat(format_), ADMIN_EXPORT_FIELDS, cursor)

    return router


def _view(entry: Suppression) -> SuppressionView:
    return SuppressionView(
        id=entry.id,
        address=entry.address,
        scope=entry.scope,
        client_id=entry.client_id,
        reason=entry.reason,
        source=entry.source,
        note=entry.note,
        created_at=entry.created_at,
        updated_at=entry.updated_at,
        expires_at=entry.expires_at,
        mode=KeyKind.TEST if entry.is_test else KeyKind.LIVE,
    )
