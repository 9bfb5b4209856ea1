"""Inbound mail kept for review, and soft bounces counted per address (issue 16)."""

from __future__ import annotations

import abc
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from mailroom.adapters.db.tables import InboundMailRow, SoftBounceRow


@dataclass(frozen=True, slots=True)
class InboundRecord:
    outcome: str
    message_id: uuid.UUID | None
    envelope_recipients: list[str]
    sender: str | None
    subject: str | None
    report_format: str
    kind: str
    reports: list[dict[str, Any]]
    raw_sha256: str
    raw: bytes
    raw_truncated: bool = False
    id: int | None = None
    received_at: datetime | None = None


class InboundMailRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, record: InboundRecord) -> int | None:
        """The new record's id; None if the same bytes were recorded before."""

    @abc.abstractmethod
    def recent(self, outcome: str | None, limit: int, before_id: int | None) -> list[InboundRecord]:
        """Newest first, without the raw bytes."""

    @abc.abstractmethod
    def get(self, record_id: int) -> InboundRecord | None: ...

    @abc.abstractmethod
    def count_soft_bounce(self, address: str, now: datetime, stale_after: datetime) -> int:
        """One more soft bounce in a row; a count last touched before ``stale_after`` restarts."""

    @abc.abstractmethod
    def reset_soft_bounces(self, address: str) -> None: ...


class SqlInboundMailRepository(InboundMailRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, record: InboundRecord) -> int | None:
        statement = (
            insert(InboundMailRow)
            .values(
                outcome=record.outcome,
                message_id=record.message_id,
                envelope_recipients=record.envelope_recipients,
                sender=record.sender,
                subject=record.subject,
                report_format=record.report_format,
                kind=record.kind,
                reports=record.reports,
                raw_sha256=record.raw_sha256,
                raw=record.raw,
                raw_truncated=record.raw_truncated,
            )
            .on_conflict_do_nothing(index_elements=["raw_sha256"])
            .returning(InboundMailRow.id)
        )
        return self._session.execute(statement).scalar()

    def recent(self, outcome: str | None, limit: int, before_id: int | None) -> list[InboundRecord]:
        query = select(InboundMailRow).order_by(InboundMailRow.id.desc()).limit(limit)
        if outcome is not None:
            query = query.where(InboundMailRow.outcome == outcome)
        if before_id is not None:
            query = query.where(InboundMailRow.id < before_id)
        return [_record(row, with_raw=False) for row in self._session.execute(query).scalars()]

    def get(self, record_id: int) -> InboundRecord | None:
        row = self._session.get(InboundMailRow, record_id)
        return _record(row, with_raw=True) if row is not None else None

    def count_soft_bounce(self, address: str, now: datetime, stale_after: datetime) -> int:
        table = SoftBounceRow.__table__
        statement = (
            insert(SoftBounceRow)
            .values(address=address, count=1, first_at=now, last_at=now)
            .on_conflict_do_update(
                index_elements=["address"],
                set_={
                    # A soft bounce long after the last one starts a new run.
                    "count": _restart_if_stale(table.c.count, table.c.last_at, stale_after),
                    "last_at": now,
                },
            )
            .returning(SoftBounceRow.count)
        )
        return int(self._session.execute(statement).scalar_one())

    def reset_soft_bounces(self, address: str) -> None:
        self._session.execute(delete(SoftBounceRow).where(SoftBounceRow.address == address))


def _restart_if_stale(count: Any, last_at: Any, stale_after: datetime) -> Any:
    from sqlalchemy import case

    return case((last_at < stale_after, 1), else_=count + 1)


def _record(row: InboundMailRow, *, with_raw: bool) -> InboundRecord:
    return InboundRecord(
        id=row.id,
        received_at=row.received_at,
        outcome=row.outcome,
        message_id=row.message_id,
        envelope_recipients=list(row.envelope_recipients),
        sender=row.sender,
        subject=row.subject,
        report_format=row.report_format,
        kind=row.kind,
        reports=list(row.reports),
        raw_sha256=row.raw_sha256,
        raw=bytes(row.raw) if with_raw else b"",
        raw_truncated=row.raw_truncated,
    )
