"""API keys in PostgreSQL: the interface services use, and its SQLAlchemy Core implementation."""

from __future__ import annotations

import abc
import ipaddress
import uuid
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from mailroom.adapters.db.repositories import _client
from mailroom.adapters.db.tables import ApiKeyRow, ClientRow
from mailroom.domain.api_keys import ApiKey
from mailroom.domain.model import Client
from mailroom.domain.tenancy import KeyKind, Scope


class ApiKeyRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, key: ApiKey) -> None: ...

    @abc.abstractmethod
    def get(self, key_id: str, *, for_update: bool = False) -> ApiKey | None: ...

    @abc.abstractmethod
    def get_with_client(self, key_id: str) -> tuple[ApiKey, Client] | None:
        """The key and its client in one read: what authentication needs."""

    @abc.abstractmethod
    def list_for_client(self, client_id: uuid.UUID, *, limit: int) -> list[ApiKey]:
        """Newest first, revoked ones included."""

    @abc.abstractmethod
    def count_active(self, client_id: uuid.UUID, now: datetime) -> int: ...

    @abc.abstractmethod
    def active_ids(self, client_id: uuid.UUID) -> list[str]:
        """Unrevoked key ids: whose cached verifications a client change makes stale."""

    @abc.abstractmethod
    def save(self, key: ApiKey) -> None:
        """Write the secret hashes and revocation (what rotation and revocation change)."""

    @abc.abstractmethod
    def touch_last_used(self, key_id: str, client_id: uuid.UUID, at: datetime) -> None:
        """Move the key's and its client's last_used_at forward (never back)."""


class SqlApiKeyRepository(ApiKeyRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, key: ApiKey) -> None:
        self._session.execute(
            insert(ApiKeyRow).values(
                id=key.id,
                client_id=key.client_id,
                name=key.name,
                secret_hash=key.secret_hash,
                scopes=sorted(scope.value for scope in key.scopes),
                mode=key.mode.value,
                expires_at=key.expires_at,
                ip_allowlist=[str(network) for network in key.ip_allowlist],
                rate_limit=key.rate_limit,
            )
        )

    def get(self, key_id: str, *, for_update: bool = False) -> ApiKey | None:
        query = select(ApiKeyRow).where(ApiKeyRow.id == key_id)
        if for_update:
            query = query.with_for_update()
        row = self._session.execute(query).scalar()
        return _key(row) if row else None

    def get_with_client(self, key_id: str) -> tuple[ApiKey, Client] | None:
        found = self._session.execute(
            select(ApiKeyRow, ClientRow)
            .join(ClientRow, ClientRow.id == ApiKeyRow.client_id)
            .where(ApiKeyRow.id == key_id)
        ).first()
        if found is None:
            return None
        key_row, client_row = found
        return _key(key_row), _client(client_row)

    def list_for_client(self, client_id: uuid.UUID, *, limit: int) -> list[ApiKey]:
        rows = self._session.execute(
            select(ApiKeyRow)
            .where(ApiKeyRow.client_id == client_id)
            .order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.id)
            .limit(limit)
        ).scalars()
        return [_key(row) for row in rows]

    def count_active(self, client_id: uuid.UUID, now: datetime) -> int:
        count = self._session.execute(
            select(func.count())
            .select_from(ApiKeyRow)
            .where(ApiKeyRow.client_id == client_id)
            .where(ApiKeyRow.revoked_at.is_(None))
            .where(ApiKeyRow.expires_at.is_(None) | (ApiKeyRow.expires_at > now))
        ).scalar_one()
        return int(count)

    def active_ids(self, client_id: uuid.UUID) -> list[str]:
        return list(
            self._session.execute(
                select(ApiKeyRow.id)
                .where(ApiKeyRow.client_id == client_id)
                .where(ApiKeyRow.revoked_at.is_(None))
            ).scalars()
        )

    def save(self, key: ApiKey) -> None:
        self._session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key.id)
            .values(
                secret_hash=key.secret_hash,
                previous_secret_hash=key.previous_secret_hash,
                previous_secret_expires_at=key.previous_secret_expires_at,
                revoked_at=key.revoked_at,
                updated_at=func.now(),
            )
        )

    def touch_last_used(self, key_id: str, client_id: uuid.UUID, at: datetime) -> None:
        # Core UPDATEs, not the ORM: a write several instances race on should
        # not read the row first. The client's own column stays the time any
        # of its keys was last used.
        self._session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id)
            .where(ApiKeyRow.last_used_at.is_(None) | (ApiKeyRow.last_used_at < at))
            .values(last_used_at=at)
        )
        self._session.execute(
            update(ClientRow)
            .where(ClientRow.id == client_id)
            .where(ClientRow.last_used_at.is_(None) | (ClientRow.last_used_at < at))
            .values(last_used_at=at)
        )


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        client_id=row.client_id,
        name=row.name,
        secret_hash=row.secret_hash,
        scopes=frozenset(Scope(name) for name in row.scopes if name in Scope._value2member_map_),
        mode=KeyKind(row.mode),
        expires_at=row.expires_at,
        ip_allowlist=tuple(ipaddress.ip_network(entry) for entry in row.ip_allowlist or []),
        rate_limit=row.rate_limit,
        previous_secret_hash=row.previous_secret_hash,
        previous_secret_expires_at=row.previous_secret_expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
