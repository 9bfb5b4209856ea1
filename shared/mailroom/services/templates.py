"""Template use cases: check props at send time, upload, list, preview."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.templates import TemplateRenderer, TemplateStore
from mailroom.domain.commands import is_valid_template_name
from mailroom.domain.errors import InvalidRequest, TemplateNotFound, UnknownTemplate
from mailroom.domain.model import RenderedEmail
from mailroom.domain.templates import (
    LintWarning,
    TemplateKind,
    TemplateSource,
    TemplateSummary,
    TemplateVersion,
    check_schema,
    lint,
    validate_props,
)
from mailroom.domain.tenancy import SYSTEM_ACTOR, Actor, AuditEntry, Caller

# A client's template list is paged (GET /v1/templates).
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class UploadedTemplate:
    name: str
    version: int
    warnings: list[LintWarning]
    bulk: bool = False


@dataclass(frozen=True, slots=True)
class TemplatePage:
    templates: list[TemplateSummary]
    next_cursor: str | None


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
    owner: uuid.UUID | None = None,
    actor: Actor = SYSTEM_ACTOR,
    bulk: bool = False,
    tracking: tuple[tuple[str, bool], ...] | None = None,
) -> UploadedTemplate:
    """Compile, check and store a new version; nothing is stored if any check fails.

    Compiling first reports syntax errors (with lines) and statically visible
    sandbox escapes, and publishes the compiled code so the first send is warm.
    With sample props, the template is also rendered once: runtime escapes,
    missing props and timeouts are refused now rather than at send time.

    ``owner`` is the client the template is for (only it can use it); None
    stores a shared template, which every client may use. ``bulk`` marks the
    version as marketing mail: its sends carry one-click unsubscribe.
    """
    if not is_valid_template_name(name):
        raise InvalidRequest(
            "a template name is 1-64 characters: a-z, 0-9, '-' and '_', starting alphanumeric",
            details=[{"field": "name", "message": "invalid template name"}],
        )
    if schema is not None:
        check_schema(schema)
    source = TemplateSource(
        name=name,
        subject=subject,
        html=html,
        text=text,
        sample_props=sample,
        schema=schema,
        owner=owner,
        bulk=bulk,
        tracking=tracking,
    )
    renderer.prepare(source)
    rendered = None
    if sample is not None:
        validate_props(name, schema, sample)
        rendered = renderer.render(source, sample)
    version = templates.add_version(
        source, owner=owner, audit=lambda number: _audit(actor, source, number)
    )
    return UploadedTemplate(
        name=name, version=version, warnings=lint(source, rendered), bulk=source.bulk
    )


def client_actor(caller: Caller, source_ip: str | None) -> Actor:
    """A client's change in the audit log: the key that made it, never its secret."""
    return Actor(name=f"key:{caller.key_id}", source_ip=source_ip)


def check_owner(uow: UnitOfWork, client_id: uuid.UUID | None) -> None:
    """An operator names an existing client to upload for (422 otherwise)."""
    if client_id is None:
        return
    with uow:
        found = uow.clients.get(client_id)
    if found is None:
        raise InvalidRequest(
            f"no client with id '{client_id}'",
            details=[{"field": "client_id", "message": "unknown client"}],
        )


def list_templates(
    templates: TemplateStore, *, client_id: uuid.UUID | None = None
) -> list[TemplateVersion]:
    """Every template and version (operators); with ``client_id``, what that client owns."""
    return templates.versions(client_id=client_id)


def client_templates(
    templates: TemplateStore, *, client_id: uuid.UUID, cursor: str | None, limit: int
) -> TemplatePage:
    """The templates a client may use: file, its own and shared uploads, by name, one page."""
    limit = max(1, min(limit, MAX_PAGE))
    entries = templates.summaries(
        client_id=client_id, after=_decode_cursor(cursor), limit=limit + 1
    )
    page = entries[:limit]
    more = len(entries) > limit
    return TemplatePage(page, _encode_cursor(page[-1].position) if more and page else None)


def _encode_cursor(position: tuple[str, int]) -> str:
    raw = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[str, int] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, rank = json.loads(raw)
        if isinstance(name, str) and type(rank) is int and 0 <= rank < len(TemplateKind.PRECEDENCE):
            return (name, rank)
    except (ValueError, TypeError, binascii.Error):
        pass
    raise InvalidRequest(
        "cursor is not one this API returned",
        details=[{"field": "cursor", "message": "invalid cursor"}],
    )


def preview_template(
    templates: TemplateStore,
    renderer: TemplateRenderer,
    *,
    name: str,
    version: int | None = None,
    props: dict[str, Any] | None = None,
    client_id: uuid.UUID | None = None,
) -> Preview:
    """Render with ``props``, else the template's sample props; lint the result.

    With ``client_id``, the template that client's sends would render.
    """
    return _preview(renderer, templates.get(name, version, client_id=client_id), props)


def client_preview(
    templates: TemplateStore,
    renderer: TemplateRenderer,
    *,
    client_id: uuid.UUID,
    name: str,
    version: int | None = None,
    props: dict[str, Any] | None = None,
) -> Preview:
    """A client's preview: a template it cannot use is 404, whoever else owns it."""
    try:
        source = templates.get(name, version, client_id=client_id)
    except UnknownTemplate as error:
        # The store's message ("there is no template named 'x'") is built
        # from the name and version asked for alone: it says nothing about
        # another client's template of that name.
        raise TemplateNotFound(
            error.message, details=[{"field": "name", "message": "unknown template"}]
        ) from error
    return _preview(renderer, source, props)


def _preview(
    renderer: TemplateRenderer, source: TemplateSource, props: dict[str, Any] | None
) -> Preview:
    chosen = props if props is not None else (source.sample_props or {})
    validate_props(source.name, source.schema, chosen)
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
        after={
            "version": version,
            # Whose template it is: a client's id, or None for a shared one.
            "client_id": str(source.owner) if source.owner else None,
            "content_sha256": hashlib.sha256(content).hexdigest(),
        },
        source_ip=actor.source_ip,
    )
