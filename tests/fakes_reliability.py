"""In-memory fakes for issue 7's interfaces (idempotency keys)."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from mailroom.adapters.db.idempotency import IdempotencyRepository, StoredKey


class FakeIdempotencyRepository(IdempotencyRepository):
    def __init__(self) -> None:
        self.keys: dict[tuple[uuid.UUID, str], StoredKey] = {}
        # Stands in for the database clock.
        self.now: datetime | None = None

    def _now(self) -> datetime:
        return self.now or datetime.now(UTC)

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
        now = self._now()
        stored = self.keys.get((client_id, key))
        free = (
            stored is None
            or stored.expires_at < now
            or (stored.message_id is None and stored.created_at < now - stale_after)
        )
        if not free:
            return stored
        self.keys[(client_id, key)] = StoredKey(request_hash, owner, None, None, now, now + ttl)
        return None

    def complete(
        self,
        client_id: uuid.UUID,
        key: str,
        owner: uuid.UUID,
        message_id: uuid.UUID,
        response: dict[str, Any],
    ) -> None:
        stored = self.keys.get((client_id, key))
        if stored is not None and stored.owner == owner:
            self.keys[(client_id, key)] = StoredKey(
                stored.request_hash,
                owner,
                message_id,
                dict(response),
                stored.created_at,
                stored.expires_at,
            )

    def release(self, client_id: uuid.UUID, key: str, owner: uuid.UUID) -> None:
        stored = self.keys.get((client_id, key))
        if stored is not None and stored.owner == owner:
            del self.keys[(client_id, key)]

    def purge_expired(self, now: datetime, limit: int) -> int:
        expired = [k for k, stored in self.keys.items() if stored.expires_at < now][:limit]
        for k in expired:
            del self.keys[k]
        return len(expired)

    def snapshot(self) -> dict[tuple[uuid.UUID, str], StoredKey]:
        return copy.copy(self.keys)
