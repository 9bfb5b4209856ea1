"""Uploaded templates in PostgreSQL: every upload is a new version, none is changed."""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from mailroom.adapters.db.audit import SqlAuditLog
from mailroom.adapters.db.tables import TemplateVersionRow
from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.templates import AuditFor, TemplateStore, unknown_template
from mailroom.domain.templates import TemplateSource, TemplateVersion

# Two uploads of one name at once compute the same next number; the loser of
# the primary-key race simply takes the next one.
_INSERT_TRIES = 5


class SqlTemplateStore(TemplateStore):
    def __init__(self, database: Database) -> None:
        self._database = database

    def get(self, name: str, version: int | None = None) -> TemplateSource:
        query = select(TemplateVersionRow).where(TemplateVersionRow.name == name)
        if version is None:
            query = query.order_by(TemplateVersionRow.version.desc()).limit(1)
        else:
            query = query.where(TemplateVersionRow.version == version)
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
        )

    def add_version(self, source: TemplateSource, *, audit: AuditFor | None = None) -> int:
        following = (
            select(func.coalesce(func.max(TemplateVersionRow.version), 0) + 1)
            .where(TemplateVersionRow.name == source.name)
            .scalar_subquery()
        )
        statement = (
            insert(TemplateVersionRow)
            .values(
                name=source.name,
                version=following,
                subject=source.subject,
                html=source.html,
                text=source.text,
                props_schema=source.schema,
                sample_props=source.sample_props,
            )
            .returning(TemplateVersionRow.version)
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

    def versions(self) -> list[TemplateVersion]:
        query = select(
            TemplateVersionRow.name, TemplateVersionRow.version, TemplateVersionRow.created_at
        ).order_by(TemplateVersionRow.name, TemplateVersionRow.version)
        with self._database.session() as session:
            rows = session.execute(query).all()
        return [
            TemplateVersion(name, "uploaded", version, created) for name, version, created in rows
        ]
