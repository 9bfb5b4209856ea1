"""Email templates: where their sources live and how they are rendered.

A file template is a folder under the templates directory: ``subject`` (one
line), ``html``, optional ``text``, optional ``schema.json`` (JSON Schema for
its props), optional ``sample.json`` (props that render it) and optional
``meta.json`` (what the template is, beyond its content: ``{"bulk": true}``
marks marketing mail, issue 16). A sidecar file rather than front matter in
``subject`` or ``html``: those stay exactly what renders. Uploaded
templates live in PostgreSQL with versions (``adapters/db/template_versions.py``).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import os
import re
import stat
import uuid
from collections.abc import Callable
from functools import cache
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailroom.adapters.render_deadline import DeadlineExceeded, DeadlineWatchdog
from mailroom.domain import errors
from mailroom.domain.errors import InvalidTemplate, RenderError, TemplateReadOnly, UnknownTemplate
from mailroom.domain.mime import (
    MAX_SUBJECT_OCTETS,
    SUBJECT_SURELY_FITS,
    subject_fits,
    subject_octets,
)
from mailroom.domain.model import RenderedEmail
from mailroom.domain.personalization import is_inline as source_is_inline
from mailroom.domain.plaintext import html_to_text
from mailroom.domain.templates import (
    TemplateKind,
    TemplateSummary,
    TemplateVersion,
    check_template_meta,
    is_valid_template_name,
)
from mailroom.domain.templates import TemplateSource as TemplateSource
from mailroom.domain.tenancy import AuditEntry
from mailroom.domain.tracking import tracking_default

if TYPE_CHECKING:
    # The renderer's machinery (jinja2, the sandbox, css-inline: ~50-100 ms of
    # imports) is loaded when a renderer is built, so the stores above stay
    # cheap to import for the functions that never render (issue 8).
    from jinja2 import Template

    from mailroom.adapters.compiled_templates import (
        CompiledTemplate,
        SharedTemplateCode,
        TemplateCompiler,
        TemplateMetrics,
    )

_CHECK_EVERY = 64
# The audit entry of an upload, made once its version number is known.
AuditFor = Callable[[int], AuditEntry]
# A missing_prop answer names at most this many props.
_MAX_MISSING_REPORTED = 50
_STYLE_BLOCK = re.compile(r"<style[^>]*>(.*?)</style>", re.IGNORECASE | re.DOTALL)


def subject_too_long(subject: str, field: str = "subject") -> errors.SubjectTooLong:
    """The error for a subject over the header line's limit once encoded (issue 14)."""
    size = subject_octets(subject)
    return errors.SubjectTooLong(
        f"the subject is {size} octets once encoded; at most {MAX_SUBJECT_OCTETS} fit a header",
        details=[{"field": field, "message": f"{size} octets encoded, limit {MAX_SUBJECT_OCTETS}"}],
    )


def missing_props(name: str, paths: list[str]) -> errors.MissingProp:
    """422 missing_prop naming every missing prop of inline content (issue 17)."""
    shown = paths[:_MAX_MISSING_REPORTED]
    what = "the inline content" if source_is_inline(name) else f"template '{name}'"
    return errors.MissingProp(
        f"{what} needs props that were not given and have no default: {', '.join(shown)}",
        details=[
            {"field": f"props.{path}", "type": "missing", "message": "no value and no default"}
            for path in shown
        ],
    )


def unknown_template(name: str, version: int | None = None) -> UnknownTemplate:
    what = f"template '{name}' version {version}" if version else f"template named '{name}'"
    return UnknownTemplate(
        f"there is no {what}", details=[{"field": "template", "message": "unknown template"}]
    )


class TemplateStore(abc.ABC):
    """Where template sources come from.

    Uploaded templates have an owner (issue 15): the client that uploaded
    one, or nobody for a shared one. ``client_id`` is who asks: a name then
    resolves to that client's own template, else the shared one; another
    client's is never found, so it answers exactly as a name that exists
    nowhere. Without ``client_id`` only shared templates are found.
    """

    @abc.abstractmethod
    def get(
        self, name: str, version: int | None = None, *, client_id: uuid.UUID | None = None
    ) -> TemplateSource:
        """The newest (or the pinned) version's source; UnknownTemplate if none."""

    def get_exact(self, name: str, version: int, *, owner: uuid.UUID | None) -> TemplateSource:
        """That version of ``owner``'s upload (None: the shared one), as a message pins it."""
        raise unknown_template(name, version)

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownTemplate:
            return False
        return True

    def versions(self, *, client_id: uuid.UUID | None = None) -> list[TemplateVersion]:
        """Every template and version this store holds; with ``client_id``, that client's own."""
        return []

    def summaries(
        self, *, client_id: uuid.UUID, after: tuple[str, int] | None, limit: int
    ) -> list[TemplateSummary]:
        """The templates ``client_id`` may use, by ``TemplateSummary.position``, after ``after``."""
        return []

    def add_version(
        self,
        source: TemplateSource,
        *,
        owner: uuid.UUID | None = None,
        audit: AuditFor | None = None,
    ) -> int:
        """Store ``source`` as the next version of its name for ``owner``; that version's number.

        ``audit`` makes the audit entry for the version number; a store that
        has an audit log appends it in the transaction that stores the version.
        """
        raise TemplateReadOnly(
            f"template '{source.name}' cannot be uploaded here: these templates are read-only"
        )


class FileTemplateStore(TemplateStore):
    """Read-only templates shipped in the deployment. An edited file is what the
    next render uses: each ``get`` compares the files' size and mtime with the
    copy it read last (six stat calls, ~10 µs, instead of reading and parsing
    them per message: ~0.5 ms in the worker's profile, issue 8)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._read: dict[str, tuple[tuple[tuple[int, int] | None, ...], TemplateSource]] = {}
        # Each name's file paths as strings: building them with pathlib per
        # message cost more than the stat calls themselves (issue 8).
        self._paths: dict[str, tuple[str, ...]] = {}

    def get(
        self, name: str, version: int | None = None, *, client_id: uuid.UUID | None = None
    ) -> TemplateSource:
        # File templates are every client's: who asks makes no difference.
        source = self.find(name, version)
        if source is None:
            raise unknown_template(name, version)
        return source

    def find(self, name: str, version: int | None = None) -> TemplateSource | None:
        """``get``, but None where no such file template exists."""
        stamp = self._stamp(name)
        if stamp is None:
            return None
        if version is not None:
            raise UnknownTemplate(
                f"'{name}' is a file template: it has no versions to pin",
                details=[{"field": "template_version", "message": "file templates have none"}],
            )
        known = self._read.get(name)
        if known is not None and known[0] == stamp:
            return known[1]
        source = self._load(name, self._root / name)
        self._read[name] = (stamp, source)
        return source

    def _stamp(self, name: str) -> tuple[tuple[int, int] | None, ...] | None:
        """Size and mtime of each of the template's files; None if it has no html file."""
        paths = self._paths.get(name)
        if paths is None:
            if not is_valid_template_name(name):
                return None
            folder = self._root / name
            paths = tuple(str(folder / part) for part in _TEMPLATE_FILES)
            self._paths[name] = paths
        stamp = tuple(_stamp(path) for path in paths)
        return stamp if stamp[_HTML] is not None else None

    def _load(self, name: str, folder: Path) -> TemplateSource:
        subject = folder / "subject"
        meta = _read_json(name, folder / "meta.json") or {}
        check_template_meta(name, meta)
        return TemplateSource(
            name=name,
            subject=subject.read_text(encoding="utf-8").strip() if subject.is_file() else "",
            html=(folder / "html").read_text(encoding="utf-8"),
            text=_read(folder / "text"),
            sample_props=_read_json(name, folder / "sample.json"),
            schema=_read_json(name, folder / "schema.json"),
            bulk=bool(meta.get("bulk", False)),
            tracking=tracking_default(meta.get("tracking"), f"template '{name}'"),
        )

    def versions(self, *, client_id: uuid.UUID | None = None) -> list[TemplateVersion]:
        if client_id is not None:
            return []  # no client owns a file template
        return [TemplateVersion(name, "file", None) for name in self.names()]

    def summaries(
        self, *, client_id: uuid.UUID, after: tuple[str, int] | None, limit: int
    ) -> list[TemplateSummary]:
        entries = (TemplateSummary(name, TemplateKind.FILE, None, 0, None) for name in self.names())
        return [entry for entry in entries if after is None or entry.position > after][:limit]

    def has(self, name: str) -> bool:
        return self._stamp(name) is not None

    def names(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(
            path.name
            for path in self._root.iterdir()
            if is_valid_template_name(path.name) and (path / "html").is_file()
        )


class LayeredTemplateStore(TemplateStore):
    """One lookup over both sources. File templates are read-only, so a file
    template's name cannot be uploaded, by an operator or a client.

    A name resolves to the file template first, then the asking client's own
    upload, then the shared upload. Files come first so that a send naming a
    file template never costs a query (the hot path, issue 8); since their
    names cannot be uploaded, the order only matters if a file template is
    deployed under a name already uploaded, and then the deployed one wins
    for new sends (a message already accepted keeps the version it pinned).
    """

    def __init__(self, files: FileTemplateStore, uploaded: TemplateStore) -> None:
        self.files = files
        self.uploaded = uploaded

    def get(
        self, name: str, version: int | None = None, *, client_id: uuid.UUID | None = None
    ) -> TemplateSource:
        source = self.files.find(name, version)
        if source is not None:
            return source
        return self.uploaded.get(name, version, client_id=client_id)

    def get_exact(self, name: str, version: int, *, owner: uuid.UUID | None) -> TemplateSource:
        return self.uploaded.get_exact(name, version, owner=owner)

    def versions(self, *, client_id: uuid.UUID | None = None) -> list[TemplateVersion]:
        return self.files.versions(client_id=client_id) + self.uploaded.versions(
            client_id=client_id
        )

    def summaries(
        self, *, client_id: uuid.UUID, after: tuple[str, int] | None, limit: int
    ) -> list[TemplateSummary]:
        files = self.files.summaries(client_id=client_id, after=after, limit=limit)
        uploaded = self.uploaded.summaries(client_id=client_id, after=after, limit=limit)
        file_names = set(self.files.names())
        merged = files + [
            dataclasses.replace(entry, active=False) if entry.name in file_names else entry
            for entry in uploaded
        ]
        return sorted(merged, key=lambda entry: entry.position)[:limit]

    def add_version(
        self,
        source: TemplateSource,
        *,
        owner: uuid.UUID | None = None,
        audit: AuditFor | None = None,
    ) -> int:
        if self.files.has(source.name):
            raise TemplateReadOnly(
                f"'{source.name}' is a file template, which is read-only: "
                "change its folder and deploy, or upload under another name"
            )
        return self.uploaded.add_version(source, owner=owner, audit=audit)


_TEMPLATE_FILES = ("subject", "html", "text", "sample.json", "schema.json", "meta.json")
_HTML = _TEMPLATE_FILES.index("html")


def _stamp(path: str) -> tuple[int, int] | None:
    """A regular file's mtime and size; None for anything else."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return (status.st_mtime_ns, status.st_size)


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _read_json(name: str, path: Path) -> dict[str, Any] | None:
    raw = _read(path)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise InvalidTemplate(f"template '{name}': {path.name} is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise InvalidTemplate(f"template '{name}': {path.name} must hold a JSON object")
    return value


@cache
def process_watchdog() -> DeadlineWatchdog:
    """One watchdog thread per process serves every renderer in it."""
    return DeadlineWatchdog()


class TemplateRenderer:
    """Compiled templates from the three-level store, rendered under a deadline.

    Jinja2 runs in a budgeted sandbox; CSS is inlined after rendering, never
    before: css-inline's HTML parser moves ``{% for %}`` blocks out of
    ``<table>`` and loop rows vanish.
    """

    def __init__(
        self,
        *,
        shared: SharedTemplateCode | None = None,
        signing_key: bytes | None = None,
        metrics: TemplateMetrics | None = None,
        timeout_seconds: float = 0.2,
        compile_timeout_seconds: float = 2.0,
        budget_bytes: int = 8 * 1024 * 1024,
        cache_size: int = 256,
        cache_ttl_seconds: int = 7 * 86_400,
        compiler: TemplateCompiler | None = None,
    ) -> None:
        import css_inline

        from mailroom.adapters.compiled_templates import (
            CodeSigner,
            CompiledTemplateStore,
            TemplateCompiler,
            TemplateMetrics,
        )
        from mailroom.adapters.template_sandbox import RecordingUndefined

        self.watchdog = compiler.watchdog if compiler else process_watchdog()
        self.timeout_seconds = timeout_seconds
        self.compiler = compiler or TemplateCompiler(
            self.watchdog, timeout_seconds=compile_timeout_seconds, budget_bytes=budget_bytes
        )
        metrics = metrics or TemplateMetrics()
        signer = CodeSigner(signing_key) if signing_key is not None else None
        self.store = CompiledTemplateStore(
            self.compiler,
            shared,
            metrics,
            signer=signer,
            size=cache_size,
            ttl_seconds=cache_ttl_seconds,
        )
        # Inline content (issue 17): the same sandbox, budget, deadline and
        # shared code store, keyed by content hash; only what a missing prop
        # does differs (it renders empty and is recorded).
        self.inline_compiler = TemplateCompiler(
            self.watchdog,
            timeout_seconds=self.compiler.timeout_seconds,
            budget_bytes=self.compiler.budget.default,
            budget=self.compiler.budget,
            undefined=RecordingUndefined,
        )
        self.inline_store = CompiledTemplateStore(
            self.inline_compiler,
            shared,
            metrics,
            signer=signer,
            size=cache_size,
            ttl_seconds=cache_ttl_seconds,
        )
        self._inliner = css_inline.CSSInliner(
            keep_at_rules=True,  # media queries survive for clients that honour them
            load_remote_stylesheets=False,  # rendering never touches the network
        )

    def prepare(self, source: TemplateSource) -> CompiledTemplate:
        """Compile (or find compiled) and publish to the shared store."""
        return self.store.get(source)

    def render(self, source: TemplateSource, props: dict[str, Any]) -> RenderedEmail:
        """The email; inline content renders a missing prop empty (``render_inline``)."""
        if source.inline:
            return self.render_inline(source, props)[0]
        rendered = self._guarded(source, props, finish=True)
        assert rendered is not None
        return rendered

    def render_inline(
        self, source: TemplateSource, props: dict[str, Any]
    ) -> tuple[RenderedEmail, list[str]]:
        """Inline content rendered, and the paths of the props it printed empty."""
        missing: list[str] = []
        rendered = self._guarded(source, props, finish=True, missing=missing)
        assert rendered is not None
        return rendered, missing

    def check_inline(self, source: TemplateSource, props: dict[str, Any]) -> list[str]:
        """``try_render`` for inline content: every missing prop's path, in order of use.

        One render finds them all (a missing prop prints empty and is noted),
        nested ones by their path (``user.address.city``, ``items.0.sku``).
        """
        missing: list[str] = []
        self._guarded(source, props, finish=False, missing=missing)
        return missing

    def try_render(self, source: TemplateSource, props: dict[str, Any]) -> None:
        """Raise what ``render`` would raise for these props, without finishing the email.

        Every refusal ``render`` can make comes from running the template's
        parts (missing props, the sandbox, the deadline, the size budget and
        the inlining bound); inlining the CSS and deriving the text part only
        reshape HTML that is already known to be fine (css-inline and the
        HTML-to-text parser accept any markup), so the send API's trial render
        skips them: half its time for ``welcome`` (issue 8).
        """
        self._guarded(source, props, finish=False)

    def _guarded(
        self,
        source: TemplateSource,
        props: dict[str, Any],
        *,
        finish: bool,
        missing: list[str] | None = None,
    ) -> RenderedEmail | None:
        # Loaded by __init__ already: these only bind the names.
        from jinja2 import TemplateError, UndefinedError
        from jinja2.exceptions import SecurityError

        from mailroom.adapters.template_sandbox import (
            TemplateTooLarge,
            UndefinedProp,
            recording_missing,
        )

        store = self.inline_store if source.inline else self.store
        compiled = store.get(source)  # may talk to Redis: outside the deadline
        budget = self.compiler.budget

        def run() -> RenderedEmail | None:
            if missing is None:
                return self._render(compiled, props, budget.default, finish=finish)
            with recording_missing(props, missing):
                return self._render(compiled, props, budget.default, finish=finish)

        try:
            return self.watchdog.run(self.timeout_seconds, run)
        except DeadlineExceeded as error:
            raise errors.RenderTimeout(
                f"template '{source.name}' took longer than "
                f"{self.timeout_seconds * 1000:.0f} ms to render and was stopped"
            ) from error
        except TemplateTooLarge as error:
            raise errors.RenderTooLarge(f"template '{source.name}': {error}") from error
        except SecurityError as error:
            raise errors.TemplateSecurityError(
                f"template '{source.name}'{_where(compiled, error)}: {error}"
            ) from error
        except UndefinedProp as error:
            if missing is not None:
                # Inline content: a missing prop used where empty cannot stand
                # in (arithmetic, a comparison), with those printed before it.
                names = [*missing, *([error.name] if error.name not in missing else [])]
                raise missing_props(source.name, [str(name) for name in names]) from error
            details = self._missing_props(compiled, props, error)
            named = ", ".join(detail["field"] for detail in details)
            raise errors.MissingProp(
                f"template '{source.name}'{_where(compiled, error)} needs props that were "
                f"not given: {named} ({error.message})",
                details=details,
            ) from error
        except RenderError:
            raise
        except (TemplateError, UndefinedError) as error:
            raise RenderError(
                f"template '{source.name}'{_where(compiled, error)} failed to render: {error}"
            ) from error
        except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as error:
            # Raised by template code on these props (1/0, int('x'), deep recursion).
            raise RenderError(
                f"template '{source.name}'{_where(compiled, error)} failed to render: "
                f"{type(error).__name__}: {error}"
            ) from error

    def _missing_props(
        self, compiled: CompiledTemplate, props: dict[str, Any], first: Exception
    ) -> list[dict[str, Any]]:
        """Every missing prop a trial render can find, not only the first one.

        StrictUndefined stops at the first missing name. On this error path
        only, the render is run again with each name found so far standing
        in as a lenient undefined (``is defined`` still says no, so guarded
        uses take the same branch), until it passes, stops at something else,
        or runs out of time or tries.
        """
        from jinja2 import ChainableUndefined

        from mailroom.adapters.template_sandbox import UndefinedProp

        details: list[dict[str, Any]] = []

        def note(error: UndefinedProp) -> bool:
            """Record ``error``; True if the next run can stand in for it."""
            top_level = bool(error.top_level and error.name)
            field = f"props.{error.name}" if top_level else "props"
            if any(detail["field"] == field for detail in details):
                return False
            details.append({"field": field, "type": "missing", "message": error.message})
            return top_level and len(details) < _MAX_MISSING_REPORTED

        assert isinstance(first, UndefinedProp)
        if not note(first):
            return details
        trial = dict(props)

        def discover() -> None:
            while True:
                for detail in details:
                    name = detail["field"].removeprefix("props.")
                    trial.setdefault(name, ChainableUndefined(name=name))
                try:
                    self._render(compiled, trial, self.compiler.budget.default, finish=False)
                    return
                except UndefinedProp as error:
                    if not note(error):
                        return

        # Anything else (the deadline, another template error) ends the
        # search: what was found so far is reported.
        with contextlib.suppress(Exception):
            self.watchdog.run(self.timeout_seconds, discover)
        return details

    def _render(
        self, compiled: CompiledTemplate, props: dict[str, Any], budget: int, *, finish: bool
    ) -> RenderedEmail | None:
        with self.compiler.budget.limit(budget):
            # A subject is one header line, whatever the template's props held.
            subject = " ".join(_run(compiled.subject, props, budget).split())
            # Measured only when it could be over (rare): the render is hot.
            if (len(subject) > SUBJECT_SURELY_FITS or not subject.isascii()) and not subject_fits(
                subject
            ):
                raise subject_too_long(subject)
            html = _run(compiled.html, props, budget)
            text = _run(compiled.text, props, budget) if compiled.text is not None else None
        # css-inline copies matching rules onto every element, in one
        # uninterruptible call: refuse tags x CSS that could explode. The CSS
        # is no larger than the HTML, so most emails skip the regex.
        tags = html.count("<")
        if tags * len(html) > 8 * budget:
            styles = sum(len(block) for block in _STYLE_BLOCK.findall(html))
            if tags * styles > 8 * budget:
                from mailroom.adapters.template_sandbox import TemplateTooLarge

                raise TemplateTooLarge(
                    f"inlining {styles} bytes of CSS into {tags} tags would exceed the budget"
                )
        if not finish:
            return None
        return RenderedEmail(
            subject=subject,
            html=self._inliner.inline(html),
            text=text if text is not None else html_to_text(html),
        )


def _run(template: Template, props: dict[str, Any], limit: int) -> str:
    """Render one part, counting literal text too: a loop over a literal yields
    no ``{{ }}`` that the sandbox would charge."""
    chunks = template.root_render_func(template.new_context(props))
    parts: list[str] = []
    size = 0
    while True:
        # Taken _CHECK_EVERY chunks at a time at C speed, then counted.
        counted = len(parts)
        parts.extend(islice(chunks, _CHECK_EVERY))
        if len(parts) == counted:
            return "".join(parts)
        size += sum(map(len, islice(parts, counted, None)))
        if size > limit:
            from mailroom.adapters.template_sandbox import TemplateTooLarge

            raise TemplateTooLarge(f"the output would exceed the render budget of {limit} B")


def _where(compiled: CompiledTemplate, error: BaseException) -> str:
    """', html line N' for the innermost template frame of the traceback."""
    templates = {"<subject>": compiled.subject, "<html>": compiled.html}
    if compiled.text is not None:
        templates["<text>"] = compiled.text
    where = ""
    traceback = error.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if filename in templates:
            line = templates[filename].get_corresponding_lineno(traceback.tb_lineno)
            where = f", {filename.strip('<>')} line {line}"
        traceback = traceback.tb_next
    return where
