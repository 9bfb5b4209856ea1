"""Clients' SMTP relays in PostgreSQL (issue 20, item 4)."""

from __future__ import annotations

import abc
import uuid

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailroom.adapters.db.tables import SmtpConfigRow
from mailroom.domain.errors import SmtpConfigNameTaken
from mailroom.domain.smtp_configs import RelaySecurity, SmtpConfig

LIST_LIMIT = 200


class SmtpConfigRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, config: SmtpConfig) -> None:
        """SmtpConfigNameTaken if the client has one of that name already."""

    @abc.abstractmethod
    def get(self, config_id: uuid.UUID, client_id: uuid.UUID | None = None) -> SmtpConfig | None:
        """The relay (of ``client_id`` when given), locked for the transaction's update."""

    @abc.abstractmethod
    def by_name(self, client_id: uuid.UUID, name: str) -> SmtpConfig | None: ...

    @abc.abstractmethod
    def list_for(self, client_id: uuid.UUID) -> list[SmtpConfig]: ...

    @abc.abstractmethod
    def all_ids(self) -> list[uuid.UUID]: ...

    @abc.abstractmethod
    def save(self, config: SmtpConfig) -> None:
        """SmtpConfigNameTaken if renamed onto another of the client's names."""

    @abc.abstractmethod
    def clear_default(self, client_id: uuid.UUID, except_id: uuid.UUID) -> None: ...

    @abc.abstractmethod
    def remove(self, config_id: uuid.UUID) -> None: ...


class SqlSmtpConfigRepository(SmtpConfigRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, config: SmtpConfig) -> None:
        try:
            with self._session.begin_nested():
                self._session.execute(insert(SmtpConfigRow).values(**_values(config)))
        except IntegrityError as error:
            raise _taken(config.name) from error

    def get(self, config_id: uuid.UUID, client_id: uuid.UUID | None = None) -> SmtpConfig | None:
        query = select(SmtpConfigRow).where(SmtpConfigRow.id == config_id)
        if client_id is not None:
            query = query.where(SmtpConfigRow.client_id == client_id)
        row = self._session.scalars(query.with_for_update()).first()
        return _config(row) if row is not None else None

    def by_name(self, client_id: uuid.UUID, name: str) -> SmtpConfig | None:
        row = self._session.scalars(
            select(SmtpConfigRow).where(
                SmtpConfigRow.client_id == client_id, SmtpConfigRow.name == name
            )
        ).first()
        return _config(row) if row is not None else None

    def list_for(self, client_id: uuid.UUID) -> list[SmtpConfig]:
        rows = self._session.scalars(
            select(SmtpConfigRow)
            .where(SmtpConfigRow.client_id == client_id)
            .order_by(SmtpConfigRow.name)
            .limit(LIST_LIMIT)
        ).all()
        return [_config(row) for row in rows]

    def all_ids(self) -> list[uuid.UUID]:
        return list(self._session.scalars(select(SmtpConfigRow.id).order_by(SmtpConfigRow.id)))

    def save(self, config: SmtpConfig) -> None:
        values = _values(config)
        del values["id"], values["client_id"]
        try:
            with self._session.begin_nested():
                self._session.execute(
                    update(SmtpConfigRow)
                    .where(SmtpConfigRow.id == config.id)
                    .values(**values, updated_at=func.now())
                )
        except IntegrityError as error:
            raise _taken(config.name) from error

    def clear_default(self, client_id: uuid.UUID, except_id: uuid.UUID) -> None:
        self._session.execute(
            update(SmtpConfigRow)
            .where(
                SmtpConfigRow.client_id == client_id,
                SmtpConfigRow.id != except_id,
                SmtpConfigRow.is_default,
            )
            .values(is_default=False, updated_at=func.now())
        )

    def remove(self, config_id: uuid.UUID) -> None:
        self._session.execute(delete(SmtpConfigRow).where(SmtpConfigRow.id == config_id))


def _taken(name: str) -> SmtpConfigNameTaken:
    return SmtpConfigNameTaken(
        f"an SMTP configuration named {name!r} exists already",
        details=[{"field": "name", "message": "taken"}],
    )


def _values(config: SmtpConfig) -> dict[str, object]:
    return {
        "id": config.id,
        "client_id": config.client_id,
        "name": config.name,
        "host": config.host,
        "port": config.port,
        "security": config.security.value,
        "username": config.username,
        "sealed_password": config.sealed_password,
        "pool_size": config.pool_size,
        "timeout_seconds": config.timeout_seconds,
        "active": config.active,
        "is_default": config.is_default,
        "throttle_per_minute": dict(config.throttle_per_minute),
    }


def _config(row: SmtpConfigRow) -> SmtpConfig:
    return SmtpConfig(
        id=row.id,
        client_id=row.client_id,
        name=row.name,
        host=row.host,
        port=row.port,
        security=RelaySecurity(row.security),
        username=row.username,
        sealed_password=row.sealed_password,
        pool_size=row.pool_size,
        timeout_seconds=row.timeout_seconds,
        active=row.active,
        is_default=row.is_default,
        throttle_per_minute=dict(row.throttle_per_minute),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
