"""Email templates: where their sources live and how they are rendered.

A template is a folder: ``subject`` (one line), ``html``, optional ``text``,
optional ``sample.json`` with props that render it.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from mailroom.domain.commands import is_valid_template_name
from mailroom.domain.errors import RenderError, UnknownTemplate
from mailroom.domain.model import RenderedEmail
from mailroom.domain.plaintext import html_to_text


@dataclass(frozen=True, slots=True)
class TemplateSource:
    name: str
    subject: str
    html: str
    text: str | None = None
    sample_props: dict[str, Any] | None = None


class TemplateStore(abc.ABC):
    @abc.abstractmethod
    def get(self, name: str) -> TemplateSource:
        """The template's source; UnknownTemplate if there is none by that name."""

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownTemplate:
            return False
        return True


class FileTemplateStore(TemplateStore):
    def __init__(self, root: Path) -> None:
        self._root = root

    def get(self, name: str) -> TemplateSource:
        folder = self._root / name
        if not is_valid_template_name(name) or not (folder / "html").is_file():
            raise UnknownTemplate(
                f"there is no template named '{name}'",
                details=[{"field": "template", "message": "unknown template"}],
            )
        text_path = folder / "text"
        sample_path = folder / "sample.json"
        return TemplateSource(
            name=name,
            subject=(folder / "subject").read_text(encoding="utf-8").strip()
            if (folder / "subject").is_file()
            else "",
            html=(folder / "html").read_text(encoding="utf-8"),
            text=text_path.read_text(encoding="utf-8") if text_path.is_file() else None,
            sample_props=json.loads(sample_path.read_text(encoding="utf-8"))
            if sample_path.is_file()
            else None,
        )


class TemplateRenderer:
    """Jinja2 in a sandbox, then CSS inlining of the rendered HTML.

    Inlining happens after rendering, never before: css-inline's HTML parser
    moves ``{% for %}`` blocks out of ``<table>`` and loop rows vanish.
    """

    def __init__(self) -> None:
        self._html_env = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
        # Subject and text parts are not HTML: escaping would show "&amp;".
        self._text_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
        self._inliner = css_inline.CSSInliner(
            keep_at_rules=True,  # media queries survive for clients that honour them
            load_remote_stylesheets=False,  # rendering never touches the network
        )

    def render(self, source: TemplateSource, props: dict[str, Any]) -> RenderedEmail:
        try:
            subject = self._text_env.from_string(source.subject).render(props)
            html = self._html_env.from_string(source.html).render(props)
            text = (
                self._text_env.from_string(source.text).render(props)
                if source.text is not None
                else None
            )
        except UndefinedError as error:
            raise RenderError(
                f"template '{source.name}' needs a prop that was not given: {error.message}"
            ) from error
        except TemplateError as error:
            raise RenderError(f"template '{source.name}' failed to render: {error}") from error
        # A subject is one header line, whatever the template's props held.
        subject = " ".join(subject.split())
        inlined = self._inliner.inline(html)
        return RenderedEmail(
            subject=subject,
            html=inlined,
            text=text if text is not None else html_to_text(html),
        )
