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
    def read(
        self, *, target_id: str | None = None, after_seq: int | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """Entries in the order they were recorded (ascending ``seq``), optionally about one
        target: the first ``limit`` after ``after_seq``, or without it the last ``limit``."""


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

    def read(
        self, *, target_id: str | None = None, after_seq: int | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        # The id is a sequence: one transaction's rows are consecutive and in
        # the order they were appended. Rows of concurrent transactions are
        # ordered by when each took its id, which is when its action was made.
        if after_seq is None:
            query = select(AdminAuditRow).order_by(AdminAuditRow.id.desc()).limit(limit)
        else:
            query = (
                select(AdminAuditRow)
                .where(AdminAuditRow.id > after_seq)
                .order_by(AdminAuditRow.id)
                .limit(limit)
            )
        if target_id is not None:
            query = query.where(AdminAuditRow.target_id == target_id)
        entries = [
            AuditEntry(
                actor=row.actor,
                action=row.action,
                target_type=row.target_type,
                target_id=row.target_id,
                before=row.before,
                after=row.after,
                source_ip=row.source_ip,
                at=row.at,
                seq=row.id,
            )
            for row in self._session.execute(query).scalars()
        ]
        return entries if after_seq is not None else entries[::-1]
