"""The admin audit log: every admin action, appended in the transaction that made it."""

from __future__ import annotations

import abc

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from mailroom.adapters.db.tables import AdminAuditRow
from mailroom.domain.tenancy import AuditEntry


class AuditLog(abc.ABC):
    @abc.abstractmethod
    def append(self, entry: AuditEntry) -> None: ...

    @abc.abstractmethod
    def recent(self, *, target_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest entries first, optionally about one target."""


class SqlAuditLog(AuditLog):
    def __init__(self, session: Session) -> None:
        self._session = session

    def append(self, entry: AuditEntry) -> None:
        self._session.execute(
            insert(AdminAuditRow).values(
                actor=entry.actor,
                action=entry.action,
                target_type=entry.target_type,
                target_id=entry.target_id,
                before=entry.before,
                after=entry.after,
                source_ip=entry.source_ip,
            )
        )

    def recent(self, *, target_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        query = select(AdminAuditRow).order_by(AdminAuditRow.id.desc()).limit(limit)
        if target_id is not None:
            query = query.where(AdminAuditRow.target_id == target_id)
        return [
            AuditEntry(
                actor=row.actor,
                action=row.action,
                target_type=row.target_type,
                target_id=row.target_id,
                before=row.before,
                after=row.after,
                source_ip=row.source_ip,
                at=row.at,
            )
            for row in self._session.execute(query).scalars()
        ]
