"""Admin routes for templates: upload a version, list, preview with lint warnings.

Operators upload shared templates (no ``client_id``), which every client may
use, or a template for one client (``?client_id=``), as that client would
with ``POST /v1/templates`` (issue 15).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from mailroom.bootstrap import Services
from mailroom.domain.commands import MAX_VERSION, TEMPLATE_NAME_PATTERN, TrackingRequest
from mailroom.domain.templates import LintWarning
from mailroom.domain.tenancy import Actor
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers
from mailroom.services import templates as template_service
from mailroom.services.templates import Preview

ServicesProvider = Callable[[], Services]


class TemplateUpload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=TEMPLATE_NAME_PATTERN, examples=["receipt"])
    subject: str = Field(max_length=998, description="One line; Jinja2.")
    html: str = Field(description="The HTML part; Jinja2 with autoescaping.")
    text: str | None = Field(
        default=None, description="The plain-text part; derived from the HTML when omitted."
    )
    props_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="JSON Schema the props of every send are validated against.",
    )
    sample: dict[str, Any] | None = Field(
        default=None, description="Props to test-render with now and to preview with later."
    )
    bulk: bool = Field(
        default=False,
        description=(
            "Bulk or marketing mail: every send using this version carries RFC 8058 "
            'one-click unsubscribe, as `"bulk": true` on the send does (one recipient '
            'per send; a send\'s `"bulk": false` cannot turn it off).'
        ),
    )
    tracking: TrackingRequest | None = Field(
        default=None,
        description=(
            "Open and click tracking for every send of this version (issue 21), over its "
            "queue's default and under a send's own `tracking`, each key both ways."
        ),
    )


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    props: dict[str, Any] | None = Field(
        default=None, description="Props to render with; the template's sample when omitted."
    )
    version: StrictInt | None = Field(
        default=None, ge=1, le=MAX_VERSION, description="An uploaded version; newest."
    )


class WarningView(BaseModel):
    code: str
    message: str


class UploadedView(BaseModel):
    name: str
    version: int
    bulk: bool = Field(default=False, description="Its sends carry one-click unsubscribe.")
    warnings: list[WarningView]


class VersionView(BaseModel):
    version: int
    created_at: datetime | None


class TemplateView(BaseModel):
    name: str
    kind: str = Field(description="`file` (read-only, deployed) or `uploaded`.")
    client_id: uuid.UUID | None = Field(
        default=None,
        description="The client an uploaded template belongs to; null: shared (or a file).",
    )
    versions: list[VersionView]


class TemplateListView(BaseModel):
    templates: list[TemplateView]


class PreviewView(BaseModel):
    name: str
    version: int | None
    bulk: bool = Field(
        default=False,
        description="Bulk mail (meta.json, or the upload's flag): one-click unsubscribe.",
    )
    subject: str
    html: str
    text: str
    warnings: list[WarningView]


def warning_views(warnings: list[LintWarning]) -> list[WarningView]:
    return [WarningView(code=w.code, message=w.message) for w in warnings]


def preview_view(name: str, result: Preview) -> PreviewView:
    return PreviewView(
        name=name,
        version=result.source.version,
        bulk=result.source.bulk,
        subject=result.rendered.subject,
        html=result.rendered.html,
        text=result.rendered.text,
        warnings=warning_views(result.warnings),
    )


_FOR_CLIENT = "The client to upload for (its own template); without it, a shared template."


def upload_answer(
    services: Services, template: TemplateUpload, *, owner: uuid.UUID | None, actor: Actor
) -> Response[str]:
    """Store an upload as ``owner``'s (None: shared) and answer 201 (client and admin routes)."""
    uploaded = template_service.upload_template(
        services.templates,
        services.renderer,
        name=template.name,
        subject=template.subject,
        html=template.html,
        text=template.text,
        schema=template.props_schema,
        sample=template.sample,
        owner=owner,
        actor=actor,
        bulk=template.bulk,
        tracking=None if template.tracking is None else (template.tracking.as_pairs() or None),
    )
    logger.info("template uploaded", extra={"template": uploaded.name, "version": uploaded.version})
    view = UploadedView(
        name=uploaded.name,
        version=uploaded.version,
        bulk=uploaded.bulk,
        warnings=warning_views(uploaded.warnings),
    )
    return Response(
        status_code=201, content_type=content_types.APPLICATION_JSON, body=view.model_dump_json()
    )


def template_routes(services: ServicesProvider) -> Router:
    # admin.py lists this router among its own, so its helpers come in here.
    from mailroom.entrypoints.admin import ADMIN_SECURITY, require_admin

    router = Router()

    @router.post(
        "/admin/templates",
        status_code=201,
        summary="Upload a template, or a new version of one",
        description=(
            "Compiles first: syntax errors (with their line) and sandbox escapes answer 422. "
            "With `sample`, the template is also rendered once. File templates are "
            "read-only (409). The answer carries lint warnings. With `client_id`, the "
            "template is that client's own; without it, it is shared with every client."
        ),
        responses=answers(
            201,
            "Stored as the next version, with lint warnings",
            UploadedView,
            errors={
                409: "template_read_only: a file template of that name exists",
                422: (
                    "validation_error (also: an unknown client_id), invalid_template (syntax "
                    "error, sandbox escape, bad schema), render_error, missing_prop, "
                    "invalid_props (the sample fails)"
                ),
            },
        ),
        tags=["templates"],
        security=ADMIN_SECURITY,
    )
    def upload(
        template: Annotated[TemplateUpload, Body()],
        client_id: Annotated[uuid.UUID | None, Query(description=_FOR_CLIENT)] = None,
    ) -> Response[str]:
        active = services()
        actor = require_admin(router, active)
        template_service.check_owner(active.uow(), client_id)
        return upload_answer(active, template, owner=client_id, actor=actor)

    @router.get(
        "/admin/templates",
        summary="Every template and its versions: files, shared uploads and every client's",
        responses=answers(200, "The templates"),
        tags=["templates"],
        security=ADMIN_SECURITY,
    )
    def list_templates(
        client_id: Annotated[
            uuid.UUID | None, Query(description="Only the templates this client owns.")
        ] = None,
    ) -> TemplateListView:
        active = services()
        require_admin(router, active)
        views: dict[tuple[str, str, uuid.UUID | None], TemplateView] = {}
        for entry in template_service.list_templates(active.templates, client_id=client_id):
            view = views.setdefault(
                (entry.name, entry.kind, entry.owner),
                TemplateView(name=entry.name, kind=entry.kind, client_id=entry.owner, versions=[]),
            )
            if entry.version is not None:
                view.versions.append(
                    VersionView(version=entry.version, created_at=entry.created_at)
                )
        return TemplateListView(templates=list(views.values()))

    @router.post(
        "/admin/templates/<name>/preview",
        summary="Render a template with sample props, with lint warnings",
        responses=answers(
            200,
            "The rendered subject, HTML and text",
            errors={
                422: (
                    "validation_error, unknown_template (or version), render_error, "
                    "render_timeout, missing_prop, invalid_props"
                )
            },
        ),
        tags=["templates"],
        security=ADMIN_SECURITY,
    )
    def preview(
        name: Annotated[str, Path(pattern=TEMPLATE_NAME_PATTERN)],
        request: Annotated[PreviewRequest | None, Body()] = None,
        client_id: Annotated[
            uuid.UUID | None,
            Query(description="Render what this client's sends would; without it, shared only."),
        ] = None,
    ) -> PreviewView:
        active = services()
        require_admin(router, active)
        asked = request or PreviewRequest()
        result = template_service.preview_template(
            active.templates,
            active.renderer,
            name=name,
            version=asked.version,
            props=asked.props,
            client_id=client_id,
        )
        return preview_view(name, result)

    return router
