"""Inline content of sends in PostgreSQL, keyed by content hash (issue 17)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from mailroom.adapters.db.tables import InlineContentRow
from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.inline_content import InlineContentStore
from mailroom.domain.personalization import INLINE_PREFIX, InlineContent, source_of
from mailroom.domain.templates import TemplateSource

# Hashes this process has written or read: a thousand sends of one content
# write it once, and a batch's worker reads it once.
_REMEMBERED = 1024


class SqlInlineContentStore(InlineContentStore):
    def __init__(self, database: Database) -> None:
        self._database = database
        self._known: OrderedDict[str, TemplateSource] = OrderedDict()
        self._lock = threading.Lock()

    def save(self, content: InlineContent) -> None:
        name = content.template_name
        if self._remembered(name) is not None:
            return
        with self._database.session() as session:
            session.execute(
                insert(InlineContentRow)
                .values(
                    content_hash=content.content_hash,
                    subject=content.subject,
                    html=content.html,
                    text=content.text,
                )
                .on_conflict_do_nothing(index_elements=["content_hash"])
            )
            session.commit()
        self._remember(name, content.source)

    def get(self, name: str) -> TemplateSource | None:
        source = self._remembered(name)
        if source is not None:
            return source
        with self._database.session() as session:
            row = session.execute(
                select(InlineContentRow).where(
                    InlineContentRow.content_hash == name.removeprefix(INLINE_PREFIX)
                )
            ).scalar()
        if row is None:
            return None
        source = source_of(name, row.subject, row.html, row.text)
        self._remember(name, source)
        return source

    def _remembered(self, name: str) -> TemplateSource | None:
        with self._lock:
            source = self._known.get(name)
            if source is not None:
                self._known.move_to_end(name)
            return source

    def _remember(self, name: str, source: TemplateSource) -> None:
        with self._lock:
            self._known[name] = source
            while len(self._known) > _REMEMBERED:
                self._known.popitem(last=False)
