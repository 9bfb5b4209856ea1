"""Admin routes for templates: upload a version, list, preview with lint warnings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from mailroom.bootstrap import Services
from mailroom.domain.commands import MAX_VERSION, TEMPLATE_NAME_PATTERN
from mailroom.domain.templates import LintWarning
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers
from mailroom.services import templates as template_service

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
    warnings: list[WarningView]


class VersionView(BaseModel):
    version: int
    created_at: datetime | None


class TemplateView(BaseModel):
    name: str
    kind: str = Field(description="`file` (read-only, deployed) or `uploaded`.")
    versions: list[VersionView]


class TemplateListView(BaseModel):
    templates: list[TemplateView]


class PreviewView(BaseModel):
    name: str
    version: int | None
    subject: str
    html: str
    text: str
    warnings: list[WarningView]


def _warnings(warnings: list[LintWarning]) -> list[WarningView]:
    return [WarningView(code=w.code, message=w.message) for w in warnings]


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
            "read-only (409). The answer carries lint warnings."
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
        security=ADMIN_SECURITY,
    )
    def upload(template: Annotated[TemplateUpload, Body()]) -> Response[str]:
        active = services()
        actor = require_admin(router, active)
        uploaded = template_service.upload_template(
            active.templates,
            active.renderer,
            name=template.name,
            subject=template.subject,
            html=template.html,
            text=template.text,
            schema=template.props_schema,
            sample=template.sample,
            actor=actor,
        )
        logger.info(
            "template uploaded", extra={"template": uploaded.name, "version": uploaded.version}
        )
        view = UploadedView(
            name=uploaded.name, version=uploaded.version, warnings=_warnings(uploaded.warnings)
        )
        return Response(
            status_code=201,
            content_type=content_types.APPLICATION_JSON,
            body=view.model_dump_json(),
        )

    @router.get(
        "/admin/templates",
        summary="Every template and its versions",
        responses=answers(200, "The templates"),
        tags=["templates"],
        security=ADMIN_SECURITY,
    )
    def list_templates() -> TemplateListView:
        active = services()
        require_admin(router, active)
        views: dict[str, TemplateView] = {}
        for entry in template_service.list_templates(active.templates):
            view = views.setdefault(
                entry.name, TemplateView(name=entry.name, kind=entry.kind, versions=[])
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
    ) -> PreviewView:
        active = services()
        require_admin(router, active)
        asked = request or PreviewRequest()
        result = template_service.preview_template(
            active.templates, active.renderer, name=name, version=asked.version, props=asked.props
        )
        return PreviewView(
            name=name,
            version=result.source.version,
            subject=result.rendered.subject,
            html=result.rendered.html,
            text=result.rendered.text,
            warnings=_warnings(result.warnings),
        )

    return router
