"""Where the inline content of sends is kept (issue 17), and the template store that finds it.

A message with inline content names it ``inline:<content hash>``
(domain/personalization.py); the content itself is written once per hash,
however many messages send it, and read back by the worker like a template.
"""

from __future__ import annotations

import abc
import uuid

from mailroom.adapters.templates import AuditFor, TemplateStore, unknown_template
from mailroom.domain.personalization import InlineContent, is_inline
from mailroom.domain.templates import TemplateSource, TemplateSummary, TemplateVersion


class InlineContentStore(abc.ABC):
    @abc.abstractmethod
    def save(self, content: InlineContent) -> None:
        """Keep ``content`` under its hash (nothing happens if it is kept already)."""

    @abc.abstractmethod
    def get(self, name: str) -> TemplateSource | None:
        """The content named ``inline:<hash>`` as a source to render, or None."""


class WithInlineContent(TemplateStore):
    """A template store that also resolves ``inline:<hash>`` names, to their content.

    No template name can start with ``inline:``, so the two never meet.
    """

    def __init__(self, templates: TemplateStore, contents: InlineContentStore) -> None:
        self.templates = templates
        self.contents = contents

    def get(
        self, name: str, version: int | None = None, *, client_id: uuid.UUID | None = None
    ) -> TemplateSource:
        if is_inline(name):
            source = self.contents.get(name)
            if source is None:
                raise unknown_template(name)
            return source
        return self.templates.get(name, version, client_id=client_id)

    def get_exact(self, name: str, version: int, *, owner: uuid.UUID | None) -> TemplateSource:
        return self.templates.get_exact(name, version, owner=owner)

    def exists(self, name: str) -> bool:
        return self.templates.exists(name)

    def versions(self, *, client_id: uuid.UUID | None = None) -> list[TemplateVersion]:
        return self.templates.versions(client_id=client_id)

    def summaries(
        self, *, client_id: uuid.UUID, after: tuple[str, int] | None, limit: int
    ) -> list[TemplateSummary]:
        return self.templates.summaries(client_id=client_id, after=after, limit=limit)

    def add_version(
        self,
        source: TemplateSource,
        *,
        owner: uuid.UUID | None = None,
        audit: AuditFor | None = None,
    ) -> int:
        return self.templates.add_version(source, owner=owner, audit=audit)
