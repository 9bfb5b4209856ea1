"""Client routes for templates (issue 15): upload, list and preview a client's own.

A client sees the file templates, the shared uploads and its own uploads,
never another client's: a name it cannot use answers 404 template_not_found
here (422 unknown_template on /v1/send), exactly as a name that exists nowhere.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, Field

from mailroom.bootstrap import Services
from mailroom.domain.commands import TEMPLATE_NAME_PATTERN
from mailroom.domain.tenancy import Scope
from mailroom.entrypoints.admin_templates import (
    PreviewRequest,
    PreviewView,
    TemplateUpload,
    UploadedView,
    preview_view,
    upload_answer,
)
from mailroom.entrypoints.api import caller_of
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.services import templates as template_service

ServicesProvider = Callable[[], Services]


class TemplateSummaryView(BaseModel):
    name: str
    kind: str = Field(
        description=(
            "`file` (deployed, read-only, every client's), `client` (uploaded by this "
            "client, for it alone) or `shared` (uploaded by an operator for every client)."
        )
    )
    active: bool = Field(
        description=(
            "Whether a send naming this template renders this one: a name resolves to the "
            "file template, else the client's own, else the shared one."
        )
    )
    latest_version: int | None = Field(description="The newest uploaded version; null for files.")
    version_count: int
    updated_at: datetime | None = Field(description="When the newest version was uploaded.")


class TemplatePageView(BaseModel):
    templates: list[TemplateSummaryView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


def client_template_routes(services: ServicesProvider) -> Router:
    router = Router()

    def source_ip() -> str | None:
        identity = (router.current_event.raw_event.get("requestContext") or {}).get("identity")
        address = (identity or {}).get("sourceIp")
        return str(address) if address else None

    @router.post(
        "/v1/templates",
        status_code=201,
        summary="Upload a template of this client's, or a new version of one",
        description=(
            "The template is this client's alone; another client's template of the same "
            "name is not affected, and this client's own wins over a shared upload of that "
            "name for its sends. Compiles first: syntax errors (with their line) and sandbox "
            "escapes answer 422. With `sample`, it is also rendered once. File template "
            "names are read-only (409). The answer carries lint warnings."
        ),
        responses=answers(
            201,
            "Stored as the next version, with lint warnings",
            UploadedView,
            errors={
                409: "template_read_only: a file template of that name exists",
                422: (
                    "validation_error, invalid_template (syntax error, sandbox escape, bad "
                    "schema), render_error, missing_prop, invalid_props (the sample fails)"
                ),
            },
        ),
        tags=["templates"],
        security=client_key(Scope.TEMPLATE_MANAGE),
    )
    def upload(template: Annotated[TemplateUpload, Body()]) -> Response[str]:
        active = services()
        caller = caller_of(router, active, Scope.TEMPLATE_MANAGE)
        actor = template_service.client_actor(caller, source_ip())
        return upload_answer(active, template, owner=caller.client.id, actor=actor)

    @router.get(
        "/v1/templates",
        summary="The templates this client may send with: file, shared and its own, by name",
        description=(
            "One entry per template and where it comes from (`kind`), sorted by name and then "
            "by precedence (file, client, shared); `active` marks the one a send renders."
        ),
        responses=answers(
            200,
            "One page",
            TemplatePageView,
            errors={422: "validation_error: a bad limit, or a cursor this API did not return"},
        ),
        tags=["templates"],
        security=client_key(Scope.TEMPLATE_MANAGE),
    )
    def list_templates(
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=template_service.MAX_PAGE)] = 50,
    ) -> TemplatePageView:
        active = services()
        caller = caller_of(router, active, Scope.TEMPLATE_MANAGE)
        page = template_service.client_templates(
            active.templates, client_id=caller.client.id, cursor=cursor, limit=limit
        )
        return TemplatePageView(
            templates=[
                TemplateSummaryView(
                    name=entry.name,
                    kind=entry.kind,
                    active=entry.active,
                    latest_version=entry.latest_version,
                    version_count=entry.version_count,
                    updated_at=entry.updated_at,
                )
                for entry in page.templates
            ],
            next_cursor=page.next_cursor,
        )

    @router.post(
        "/v1/templates/<name>/preview",
        summary="Render a template this client may use with sample (or given) props",
        responses=answers(
            200,
            "The rendered subject, HTML and text, with lint warnings",
            PreviewView,
            errors={
                404: (
                    "template_not_found: no template (or version) of that name this client may use"
                ),
                422: (
                    "validation_error, render_error, render_timeout, missing_prop, invalid_props"
                ),
            },
        ),
        tags=["templates"],
        security=client_key(Scope.TEMPLATE_MANAGE),
    )
    def preview(
        name: Annotated[str, Path(pattern=TEMPLATE_NAME_PATTERN)],
        request: Annotated[PreviewRequest | None, Body()] = None,
    ) -> PreviewView:
        active = services()
        caller = caller_of(router, active, Scope.TEMPLATE_MANAGE)
        asked = request or PreviewRequest()
        result = template_service.client_preview(
            active.templates,
            active.renderer,
            client_id=caller.client.id,
            name=name,
            version=asked.version,
            props=asked.props,
        )
        return preview_view(name, result)

    return router
