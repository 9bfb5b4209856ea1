"""Uploaded templates in PostgreSQL: every upload is a new version, none is changed.

Each belongs to a client (``client_id``) or is shared (NULL). A client's
lookups read only its own rows and the shared ones: another client's
template is invisible, not forbidden, so nothing tells it apart from a name
that exists nowhere (issue 15).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, case, exists, func, insert, not_, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from mailroom.adapters.db.audit import SqlAuditLog
from mailroom.adapters.db.tables import TemplateVersionRow
from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.templates import AuditFor, TemplateStore, unknown_template
from mailroom.domain.templates import (
    TemplateKind,
    TemplateSource,
    TemplateSummary,
    TemplateVersion,
)
from mailroom.domain.tracking import tracking_default

# Two uploads of one name at once compute the same next number; the loser of
# the unique index's race simply takes the next one.
_INSERT_TRIES = 5
_T = TemplateVersionRow


def _owned_by(owner: uuid.UUID | None) -> Any:
    return _T.client_id.is_(None) if owner is None else _T.client_id == owner


class SqlTemplateStore(TemplateStore):
    def __init__(self, database: Database) -> None:
        self._database = database

    def get(
        self, name: str, version: int | None = None, *, client_id: uuid.UUID | None = None
    ) -> TemplateSource:
        visible: ColumnElement[bool]
        if client_id is None:
            visible = _T.client_id.is_(None)
        else:
            # The client's own template of this name, else the shared one:
            # the owner is chosen by name, the version within it (a client
            # that owns "receipt" never gets a shared "receipt" version).
            mine = aliased(_T)
            owns = exists().where(mine.name == name, mine.client_id == client_id)
            visible = or_(_T.client_id == client_id, and_(_T.client_id.is_(None), not_(owns)))
        query = select(_T).where(_T.name == name, visible)
        if version is None:
            query = query.order_by(_T.version.desc()).limit(1)
        else:
            query = query.where(_T.version == version)
        return self._one(query, name, version)

    def get_exact(self, name: str, version: int, *, owner: uuid.UUID | None) -> TemplateSource:
        query = select(_T).where(_T.name == name, _T.version == version, _owned_by(owner))
        return self._one(query, name, version)

    def _one(self, query: Any, name: str, version: int | None) -> TemplateSource:
        with self._database.session() as session:
            row = session.execute(query).scalar()
        if row is None:
            raise unknown_template(name, version)
        return TemplateSource(
            name=row.name,
            subject=row.subject,
            html=row.html,
            text=row.text,
            sample_props=row.sample_props,
            schema=row.props_schema,
            version=row.version,
            owner=row.client_id,
            bulk=row.bulk,
            tracking=tracking_default(row.tracking, f"template {row.name}"),
        )

    def add_version(
        self,
        source: TemplateSource,
        *,
        owner: uuid.UUID | None = None,
        audit: AuditFor | None = None,
    ) -> int:
        following = (
            select(func.coalesce(func.max(_T.version), 0) + 1)
            .where(_T.name == source.name, _owned_by(owner))
            .scalar_subquery()
        )
        statement = (
            insert(_T)
            .values(
                name=source.name,
                client_id=owner,
                version=following,
                subject=source.subject,
                html=source.html,
                text=source.text,
                props_schema=source.schema,
                sample_props=source.sample_props,
                bulk=source.bulk,
                tracking=None if source.tracking is None else dict(source.tracking),
            )
            .returning(_T.version)
        )
        for attempt in range(_INSERT_TRIES):
            try:
                with self._database.session() as session, session.begin():
                    version = int(session.execute(statement).scalar_one())
                    if audit is not None:
                        SqlAuditLog(session).append(audit(version))
                    return version
            except IntegrityError:
                if attempt == _INSERT_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def versions(self, *, client_id: uuid.UUID | None = None) -> list[TemplateVersion]:
        query = select(_T.name, _T.version, _T.created_at, _T.client_id).order_by(
            _T.name, _T.client_id.nulls_first(), _T.version
        )
        if client_id is not None:
            query = query.where(_T.client_id == client_id)
        with self._database.session() as session:
            rows = session.execute(query).all()
        return [
            TemplateVersion(name, "uploaded", version, created, owner)
            for name, version, created, owner in rows
        ]

    def summaries(
        self, *, client_id: uuid.UUID, after: tuple[str, int] | None, limit: int
    ) -> list[TemplateSummary]:
        """One row per (name, owner) the client may use: its own and the shared ones."""
        rank = case(
            (_T.client_id.is_(None), TemplateKind.PRECEDENCE.index(TemplateKind.SHARED)),
            else_=TemplateKind.PRECEDENCE.index(TemplateKind.CLIENT),
        )
        mine = aliased(_T)
        shadowed = exists().where(mine.name == _T.name, mine.client_id == client_id)
        query = (
            select(
                _T.name,
                rank.label("rank"),
                func.max(_T.version),
                func.count(),
                func.max(_T.created_at),
                func.bool_or(and_(_T.client_id.is_(None), shadowed)),
            )
            .where(or_(_T.client_id == client_id, _T.client_id.is_(None)))
            # One group per (name, owner): the client's own, or the shared one.
            .group_by(_T.name, _T.client_id)
            .order_by(_T.name, rank)
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(_T.name, rank) > tuple_(*after))
        with self._database.session() as session:
            rows = session.execute(query).all()
        return [
            TemplateSummary(
                name=name,
                kind=TemplateKind.PRECEDENCE[position],
                latest_version=latest,
                version_count=count,
                updated_at=updated,
                active=not hidden,
            )
            for name, position, latest, count, updated, hidden in rows
        ]
