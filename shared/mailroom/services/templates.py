"""Template use cases: check props at send time, upload, list, preview."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from mailroom.adapters.templates import TemplateRenderer, TemplateStore
from mailroom.domain.commands import is_valid_template_name
from mailroom.domain.errors import InvalidRequest
from mailroom.domain.model import RenderedEmail
from mailroom.domain.templates import (
    LintWarning,
    TemplateSource,
    TemplateVersion,
    check_schema,
    lint,
    validate_props,
)
from mailroom.domain.tenancy import SYSTEM_ACTOR, Actor, AuditEntry


@dataclass(frozen=True, slots=True)
class UploadedTemplate:
    name: str
    version: int
    warnings: list[LintWarning]


@dataclass(frozen=True, slots=True)
class Preview:
    source: TemplateSource
    rendered: RenderedEmail
    warnings: list[LintWarning]


def check_props(renderer: TemplateRenderer, source: TemplateSource, props: dict[str, Any]) -> None:
    """Refuse props the message could not be rendered with, before it is queued.

    The schema names every failing field (InvalidProps); a trial render finds
    what a schema cannot, chiefly a prop the template uses but the request
    lacks (MissingProp, from StrictUndefined). Both answer 422.
    """
    validate_props(source.name, source.schema, props)
    renderer.try_render(source, props)


def upload_template(
    templates: TemplateStore,
    renderer: TemplateRenderer,
    *,
    name: str,
    subject: str,
    html: str,
    text: str | None = None,
    schema: dict[str, Any] | None = None,
    sample: dict[str, Any] | None = None,
    actor: Actor = SYSTEM_ACTOR,
) -> UploadedTemplate:
    """Compile, check and store a new version; nothing is stored if any check fails.

    Compiling first reports syntax errors (with lines) and statically visible
    sandbox escapes, and publishes the compiled code so the first send is warm.
    With sample props, the template is also rendered once: runtime escapes,
    missing props and timeouts are refused now rather than at send time.
    """
    if not is_valid_template_name(name):
        raise InvalidRequest(
            "a template name is 1-64 characters: a-z, 0-9, '-' and '_', starting alphanumeric",
            details=[{"field": "name", "message": "invalid template name"}],
        )
    if schema is not None:
        check_schema(schema)
    source = TemplateSource(
        name=name, subject=subject, html=html, text=text, sample_props=sample, schema=schema
    )
    renderer.prepare(source)
    rendered = None
    if sample is not None:
        validate_props(name, schema, sample)
        rendered = renderer.render(source, sample)
    version = templates.add_version(source, audit=lambda number: _audit(actor, source, number))
    return UploadedTemplate(name=name, version=version, warnings=lint(source, rendered))


def list_templates(templates: TemplateStore) -> list[TemplateVersion]:
    return templates.versions()


def preview_template(
    templates: TemplateStore,
    renderer: TemplateRenderer,
    *,
    name: str,
    version: int | None = None,
    props: dict[str, Any] | None = None,
) -> Preview:
    """Render with ``props``, else the template's sample props; lint the result."""
    source = templates.get(name, version)
    chosen = props if props is not None else (source.sample_props or {})
    validate_props(name, source.schema, chosen)
    rendered = renderer.render(source, chosen)
    return Preview(source=source, rendered=rendered, warnings=lint(source, rendered))


def _audit(actor: Actor, source: TemplateSource, version: int) -> AuditEntry:
    """An upload's audit row: the version and a hash of what was stored, not the content."""
    content = json.dumps(
        [source.subject, source.html, source.text, source.schema, source.sample_props],
        sort_keys=True,
    ).encode()
    return AuditEntry(
        actor=actor.name,
        action="template.upload",
        target_type="template",
        target_id=source.name,
        before=None,
        after={"version": version, "content_sha256": hashlib.sha256(content).hexdigest()},
        source_ip=actor.source_ip,
    )
