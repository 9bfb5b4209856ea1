"""Idempotency keys of POST /v1/send, kept in PostgreSQL next to the messages.

docs/architecture.md ("Reliability") argues for PostgreSQL over Redis: the
key is completed in the very transaction that writes the message row, so a
key can never point at a message that was not stored, nor a stored message
lack its key.
"""

from __future__ import annotations

import abc
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from mailroom.adapters.db.tables import IdempotencyKeyRow


@dataclass(frozen=True, slots=True)
class StoredKey:
    request_hash: str
    owner: uuid.UUID
    message_id: uuid.UUID | None
    response: dict[str, Any] | None
    created_at: datetime
    expires_at: datetime


class IdempotencyRepository(abc.ABC):
    @abc.abstractmethod
    def hold(
        self,
        client_id: uuid.UUID,
        key: str,
        request_hash: str,
        owner: uuid.UUID,
        *,
        ttl: timedelta,
        stale_after: timedelta,
    ) -> StoredKey | None:
        """Take the key for ``owner``; None when taken, else the key as another holds it.

        A key is free when unknown, expired, or held without a message for
        longer than ``stale_after`` (the request holding it died).
        """

    @abc.abstractmethod
    def complete(
        self,
        client_id: uuid.UUID,
        key: str,
        owner: uuid.UUID,
        message_id: uuid.UUID,
        response: dict[str, Any],
    ) -> None:
        """Record the accepted message and its response (in the caller's transaction)."""

    @abc.abstractmethod
    def release(self, client_id: uuid.UUID, key: str, owner: uuid.UUID) -> None:
        """Drop ``owner``'s hold: nothing was accepted, so the key may be used again."""

    @abc.abstractmethod
    def purge_expired(self, now: datetime, limit: int) -> int:
        """Delete up to ``limit`` expired keys; how many went."""


class SqlIdempotencyRepository(IdempotencyRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def hold(
        self,
        client_id: uuid.UUID,
        key: str,
        request_hash: str,
        owner: uuid.UUID,
        *,
        ttl: timedelta,
        stale_after: timedelta,
    ) -> StoredKey | None:
        now = func.now()
        fresh = {
            "request_hash": request_hash,
            "owner": owner,
            "message_id": None,
            "response": None,
            "created_at": now,
            "expires_at": now + ttl,
        }
        table = IdempotencyKeyRow.__table__
        statement = insert(IdempotencyKeyRow).values(client_id=client_id, key=key, **fresh)
        # One statement decides: insert, or take over an expired or abandoned
        # hold; a live one is left alone (and read below). The row lock of
        # ON CONFLICT makes two concurrent requests queue up, not both win.
        taken = self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["client_id", "key"],
                set_=fresh,
                where=(table.c.expires_at < now)
                | (table.c.message_id.is_(None) & (table.c.created_at < now - stale_after)),
            ).returning(IdempotencyKeyRow.owner)
        ).scalar()
        if taken == owner:
            return None
        row = self._session.execute(
            select(IdempotencyKeyRow).where(
                IdempotencyKeyRow.client_id == client_id, IdempotencyKeyRow.key == key
            )
        ).scalar_one()
        return StoredKey(
            request_hash=row.request_hash,
            owner=row.owner,
            message_id=row.message_id,
            response=dict(row.response) if row.response is not None else None,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    def complete(
        self,
        client_id: uuid.UUID,
        key: str,
        owner: uuid.UUID,
        message_id: uuid.UUID,
        response: dict[str, Any],
    ) -> None:
        self._session.execute(
            update(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.client_id == client_id)
            .where(IdempotencyKeyRow.key == key)
            .where(IdempotencyKeyRow.owner == owner)
            .values(message_id=message_id, response=response)
        )

    def release(self, client_id: uuid.UUID, key: str, owner: uuid.UUID) -> None:
        self._session.execute(
            delete(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.client_id == client_id)
            .where(IdempotencyKeyRow.key == key)
            .where(IdempotencyKeyRow.owner == owner)
        )

    def purge_expired(self, now: datetime, limit: int) -> int:
        expired = (
            select(IdempotencyKeyRow.client_id, IdempotencyKeyRow.key)
            .where(IdempotencyKeyRow.expires_at < now)
            .limit(limit)
        )
        result = self._session.execute(
            delete(IdempotencyKeyRow).where(
                tuple_(IdempotencyKeyRow.client_id, IdempotencyKeyRow.key).in_(expired)
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)
