"""Inline content (issue 17): a send's own subject, HTML and text, personalised from its props.

Inline content is a template like any other to the renderer: the same
sandbox, deadline, byte budget, CSS inlining and compiled-code store. Two
things set it apart:

- its name is ``inline:<content hash>``, which no template name can be (the
  colon is outside ``TEMPLATE_NAME_PATTERN``), so a message row names its
  content without a column of its own and the worker finds it by name;
- the personalization syntax ``{{ name|'Customer' }}`` (a default after a
  bare pipe, as seed C writes it) is translated at compile time to the
  engine's own ``default`` filter: ``{{ name|default('Customer') }}``.

No I/O here: where contents are kept is ``adapters/inline_content.py``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from mailroom.domain.templates import TemplateSource, lint

INLINE_PREFIX = "inline:"


def is_inline(template_name: str) -> bool:
    return template_name.startswith(INLINE_PREFIX)


@dataclass(frozen=True)
class InlineContent:
    """What a send carries instead of a template name. ``html`` or ``text`` (or both) is set."""

    subject: str
    html: str | None
    text: str | None

    @cached_property
    def content_hash(self) -> str:
        parts = json.dumps([self.subject, self.html, self.text], ensure_ascii=False)
        return hashlib.sha256(parts.encode()).hexdigest()

    @property
    def template_name(self) -> str:
        """What the message row's ``template_name`` holds: 71 characters, within its 128."""
        return f"{INLINE_PREFIX}{self.content_hash}"

    @cached_property
    def source(self) -> TemplateSource:
        """The content as the renderer takes it (one object per content: its key is kept)."""
        return source_of(self.template_name, self.subject, self.html, self.text)


@lru_cache(maxsize=256)
def lint_content(content: InlineContent) -> tuple[str, ...]:
    """The template lint (domain/templates.py) of inline content, as ``code: message``.

    Judged on the source, once per content (the cache is keyed by the
    content's value): a thousand sends of it parse its HTML once.
    """
    return tuple(f"{w.code}: {w.message}" for w in lint(content.source, None))


def source_of(name: str, subject: str, html: str | None, text: str | None) -> TemplateSource:
    """A text-only content renders an empty HTML part: the worker sends what the text says."""
    return TemplateSource(name=name, subject=subject, html=html or "", text=text, inline=True)


def translate_defaults(source: str, tokens: list[tuple[int, str, str]]) -> str:
    """``source`` with every ``|'literal'`` written as ``|default('literal')``.

    ``tokens`` are Jinja's own lexer's (``Environment.lex``): a pipe followed
    by a string literal is a syntax error in Jinja, so the rewrite never
    changes the meaning of a valid template, and a pipe inside a string
    literal or in the text around the tags is not a pipe token at all. The
    lexer's tokens put together are the source with its newlines normalised
    (as Jinja compiles it); line numbers are unchanged.
    """
    out: list[str] = []
    pending_pipe: list[str] | None = None  # a pipe and the whitespace after it
    for _, kind, value in tokens:
        if pending_pipe is not None:
            if kind == "whitespace":
                pending_pipe.append(value)
                continue
            if kind == "string":
                out.append("|default(" + value + ")")
                pending_pipe = None
                continue
            out.extend(pending_pipe)
            pending_pipe = None
        if kind == "operator" and value == "|":
            pending_pipe = [value]
            continue
        out.append(value)
    if pending_pipe is not None:
        out.extend(pending_pipe)
    return "".join(out)


def prop_paths(props: dict[str, Any]) -> dict[int, str]:
    """The dotted path of every dict and list inside ``props``, by identity.

    A render looks a missing key up on the container it reached (``user.address``
    has no ``city``): this names the container so the answer can name
    ``user.address.city``. Only built when something is missing.
    """
    paths: dict[int, str] = {}
    pending: list[tuple[Any, str]] = [(props, "")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, dict):
            paths[id(value)] = path
            for key, item in value.items():
                if isinstance(item, dict | list):
                    pending.append((item, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, list):
            paths[id(value)] = path
            for index, item in enumerate(value):
                if isinstance(item, dict | list):
                    pending.append((item, f"{path}.{index}" if path else str(index)))
    return paths
