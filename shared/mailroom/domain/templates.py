"""Templates as values: their source, their props schema and the lint rules.

No I/O here: where sources come from is ``adapters/templates.py``, how they
compile and render is ``adapters/compiled_templates.py``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from mailroom.domain.errors import InvalidProps, InvalidTemplate
from mailroom.domain.model import RenderedEmail
from mailroom.domain.tracking import tracking_default

if TYPE_CHECKING:
    from jsonschema import ValidationError
    from jsonschema.protocols import Validator

# A template name is also a folder name: no dots or slashes, so no traversal.
# Here rather than beside SendRequest: the template stores check names, and
# importing them must not build the request models (issue 8).
TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_TEMPLATE_NAME = re.compile(TEMPLATE_NAME_PATTERN)


def is_valid_template_name(name: str) -> bool:
    return bool(_TEMPLATE_NAME.match(name))


# What a file template's ``meta.json`` may hold, and each value's type.
TEMPLATE_META_FIELDS: dict[str, type] = {"bulk": bool, "tracking": dict}


def check_template_meta(name: str, meta: dict[str, Any]) -> None:
    """InvalidTemplate unless ``meta`` holds only known fields of the right type.

    A misspelt key (``"buk": true``) would otherwise send marketing mail
    without its unsubscribe headers, silently.
    """
    for key, value in meta.items():
        kind = TEMPLATE_META_FIELDS.get(key)
        if kind is None:
            known = ", ".join(sorted(TEMPLATE_META_FIELDS))
            raise InvalidTemplate(
                f"template '{name}': meta.json has an unknown field {key!r} (known: {known})"
            )
        if not isinstance(value, kind):
            raise InvalidTemplate(
                f"template '{name}': meta.json field {key!r} must be a {kind.__name__}"
            )
        if key == "tracking":
            try:
                tracking_default(value, f"template '{name}': meta.json")
            except ValueError as error:
                raise InvalidTemplate(str(error)) from None


# Gmail clips messages whose HTML is larger than this ("[Message clipped]").
GMAIL_CLIP_BYTES = 102 * 1024


@dataclass(frozen=True, slots=True)
class TemplateSource:
    name: str
    subject: str
    html: str
    text: str | None = None
    sample_props: dict[str, Any] | None = None
    # JSON Schema the props must satisfy (schema.json), if the template has one.
    schema: dict[str, Any] | None = None
    # Uploaded templates are numbered from 1; file templates have no versions.
    version: int | None = None
    # The client an uploaded template belongs to; None for a shared one (and
    # for file templates, which are always shared).
    owner: uuid.UUID | None = None
    # A send's inline content (issue 17, domain/personalization.py): its
    # ``|'default'`` shorthand is translated at compile time, and a missing
    # prop renders empty and is reported instead of stopping the render.
    inline: bool = False
    # Bulk or marketing mail (issue 16): every send using it carries RFC 8058
    # one-click unsubscribe, as ``"bulk": true`` on the send does. A file
    # template says so in ``meta.json``; an upload in its ``bulk`` field.
    bulk: bool = False
    # Issue 21: open and click tracking for its sends, under what a send
    # asks (``meta.json``'s ``tracking`` or an upload's); None: no default.
    tracking: tuple[tuple[str, bool], ...] | None = None

    @property
    def shared(self) -> bool | None:
        """Whose uploaded template this is, as a message pins it; None for a file template."""
        return None if self.version is None else self.owner is None


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One entry of the template list."""

    name: str
    kind: str  # "file" or "uploaded"
    version: int | None
    created_at: datetime | None = None
    # The client an uploaded version belongs to; None: shared (or a file).
    owner: uuid.UUID | None = None


class TemplateKind:
    """How a client sees a template in its list (issue 15): where it comes from."""

    FILE = "file"  # deployed with Mailroom, read-only, every client's
    CLIENT = "client"  # uploaded by this client, for it alone
    SHARED = "shared"  # uploaded by an operator for every client

    # A name resolves to the first of these that has it (see TemplateStore.get).
    PRECEDENCE = (FILE, CLIENT, SHARED)


@dataclass(frozen=True, slots=True)
class TemplateSummary:
    """One template in a client's list: one (name, kind), its newest version."""

    name: str
    kind: str  # TemplateKind
    latest_version: int | None
    version_count: int
    updated_at: datetime | None
    # Whether a send naming it renders this one: false when one earlier in
    # TemplateKind.PRECEDENCE has the same name.
    active: bool = True

    @property
    def position(self) -> tuple[str, int]:
        """Where it sorts: by name, then by precedence."""
        return (self.name, TemplateKind.PRECEDENCE.index(self.kind))


@dataclass(frozen=True, slots=True)
class LintWarning:
    code: str
    message: str


def check_schema(schema: Any) -> None:
    """InvalidTemplate unless ``schema`` is a JSON Schema (draft from ``$schema``, else 2020-12)."""
    if not isinstance(schema, dict):
        raise InvalidTemplate(
            "schema must be a JSON object",
            details=[{"field": "schema", "message": "not an object"}],
        )
    _validator(json.dumps(schema, sort_keys=True))


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Validator:
    """The checked validator of a schema, kept: checking a schema against its
    metaschema costs ~25 ms, validating props with a built validator ~0.1 ms."""
    # Imported here: jsonschema costs ~90 ms of cold start, and only
    # templates with a schema need it.
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for
    from referencing.exceptions import Unresolvable

    schema = json.loads(schema_json)
    dialect = schema.get("$schema")
    if dialect is not None and not isinstance(dialect, str):
        raise _not_a_schema("$schema must be a string (a dialect's URI)")
    kind = validator_for(schema)
    try:
        kind.check_schema(schema)
    except SchemaError as error:
        raise _not_a_schema(error.message) from error
    validator = kind(schema)
    try:
        _resolve_references(schema)
        # A schema that refers to itself without end ({"$ref": "#"}) recurses
        # on any instance: found now, not at the first send.
        validator.is_valid({})
    except Unresolvable as error:
        raise _not_a_schema(f"a $ref does not resolve within the schema: {error}") from error
    except RecursionError as error:
        raise _not_a_schema("a $ref refers back to itself without end") from error
    return validator


def _not_a_schema(reason: str) -> InvalidTemplate:
    return InvalidTemplate(
        f"schema is not a valid JSON Schema: {reason}",
        details=[{"field": "schema", "message": reason}],
    )


# Keywords whose values are instances (data), not subschemas: a "$ref" key
# inside them is not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "examples", "default"})


def _resolve_references(schema: dict[str, Any]) -> None:
    """Unresolvable unless every $ref resolves within the schema itself.

    Schemas are self-contained (nothing is fetched over the network), so a
    reference to anything else could never validate a send.
    """
    import referencing
    import referencing.jsonschema

    resource = referencing.Resource.from_contents(
        schema, default_specification=referencing.jsonschema.DRAFT202012
    )
    resolver = referencing.Registry().with_resource("", resource).crawl().resolver(base_uri="")
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    resolver.lookup(value)
                elif key not in _DATA_KEYWORDS:
                    stack.append(value)


def validate_props(template: str, schema: dict[str, Any] | None, props: dict[str, Any]) -> None:
    """InvalidProps naming every failing field; nothing when there is no schema."""
    if schema is None:
        return
    check_schema(schema)
    from referencing.exceptions import Unresolvable

    try:
        problems = list(_validator(json.dumps(schema, sort_keys=True)).iter_errors(props))
    except Unresolvable as error:
        # Schemas are self-contained: a $ref is never fetched over the network.
        raise InvalidTemplate(f"template '{template}' has a schema with a $ref: {error}") from error
    except RecursionError as error:
        # A $ref cycle reached only through these props' fields.
        raise InvalidTemplate(
            f"template '{template}' has a schema whose $ref refers back to itself without end"
        ) from error
    if not problems:
        return
    # One entry per field: a value can fail several keywords (type and
    # minLength, or an allOf naming the same required prop twice); the first
    # in the schema's order is the one to fix first.
    by_field: dict[str, dict[str, Any]] = {}
    for problem in sorted(problems, key=lambda p: [str(part) for part in p.absolute_path]):
        for detail in _details(problem):
            by_field.setdefault(detail["field"], detail)
    details = list(by_field.values())
    first = details[0]
    raise InvalidProps(
        f"props do not match the schema of template '{template}': "
        f"{first['field']}: {first['message']}",
        details=details,
    )


def _details(problem: ValidationError) -> list[dict[str, Any]]:
    path = ".".join(["props", *(str(part) for part in problem.absolute_path)])
    if problem.validator == "required" and isinstance(problem.instance, dict):
        required: list[str] = list(problem.validator_value)  # type: ignore[arg-type]
        missing = [name for name in required if name not in problem.instance]
        return [
            {"field": f"{path}.{name}", "type": "required", "message": "required by the template"}
            for name in missing
        ]
    return [{"field": path, "type": str(problem.validator), "message": problem.message}]


def lint(source: TemplateSource, rendered: RenderedEmail | None) -> list[LintWarning]:
    """What would make the email worse in inboxes; judged on the render when there is one."""
    scan = _HtmlScan.of(rendered.html if rendered is not None else source.html)
    # The inliner drops <link> elements, so stylesheets are looked for in the source.
    stylesheets = _HtmlScan.of(source.html).remote_stylesheets
    warnings: list[LintWarning] = []
    if rendered is not None and len(rendered.html.encode()) > GMAIL_CLIP_BYTES:
        size = len(rendered.html.encode())
        warnings.append(
            LintWarning(
                "html_too_large",
                f"the HTML is {size} bytes; Gmail clips anything over {GMAIL_CLIP_BYTES}",
            )
        )
    if source.text is None:
        warnings.append(
            LintWarning("no_text_part", "no text part: a plain version is derived from the HTML")
        )
    if scan.images_without_alt:
        warnings.append(
            LintWarning(
                "image_without_alt",
                f"{scan.images_without_alt} <img> without alt: blocked images show nothing",
            )
        )
    if stylesheets:
        warnings.append(
            LintWarning(
                "remote_stylesheet",
                "remote stylesheets are not fetched or inlined: " + ", ".join(stylesheets),
            )
        )
    if scan.scripts:
        warnings.append(LintWarning("script", "<script> is stripped or blocked by mail clients"))
    return warnings


class _HtmlScan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images_without_alt = 0
        self.remote_stylesheets: list[str] = []
        self.scripts = 0
        self._in_style = False

    @classmethod
    def of(cls, html: str) -> _HtmlScan:
        scan = cls()
        scan.feed(html)
        scan.close()
        return scan

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img" and "alt" not in values:
            self.images_without_alt += 1
        elif tag == "link" and "stylesheet" in (values.get("rel") or "").lower().split():
            self.remote_stylesheets.append(values.get("href") or "(no href)")
        elif tag == "script":
            self.scripts += 1
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style and "@import" in data:
            self.remote_stylesheets.append("@import in <style>")
