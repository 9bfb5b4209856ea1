"""Repositories: how services read and write clients and messages.

Each has an abstract interface (unit tests subclass it with in-memory fakes)
and one PostgreSQL implementation written with SQLAlchemy 2 Core statements,
which map straight onto the domain dataclasses without ORM identity tracking.
"""

from __future__ import annotations

import abc
import uuid
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from mailroom.adapters.db.tables import ClientRow, MessageEventRow, MessageRow
from mailroom.domain.model import (
    Client,
    ClientStatus,
    EventType,
    Message,
    MessageEvent,
    MessageStatus,
)


class ClientRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, client: Client) -> None: ...

    @abc.abstractmethod
    def get(self, client_id: uuid.UUID) -> Client | None: ...

    @abc.abstractmethod
    def get_by_api_key(self, api_key: str) -> Client | None: ...


class MessageRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, message: Message) -> None: ...

    @abc.abstractmethod
    def get(self, message_id: uuid.UUID) -> Message | None: ...

    @abc.abstractmethod
    def save_outcome(self, message: Message) -> None:
        """Persist status, provider, attempts, subject and error after a send attempt."""

    @abc.abstractmethod
    def append_event(
        self, message_id: uuid.UUID, event_type: EventType, detail: dict[str, Any]
    ) -> None: ...

    @abc.abstractmethod
    def events(self, message_id: uuid.UUID) -> list[MessageEvent]: ...

    def get_for_client(self, client_id: uuid.UUID, message_id: uuid.UUID) -> Message | None:
        message = self.get(message_id)
        return message if message is not None and message.client_id == client_id else None


class SqlClientRepository(ClientRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, client: Client) -> None:
        self._session.execute(
            insert(ClientRow).values(
                id=client.id,
                name=client.name,
                api_key_prefix=client.api_key_prefix,
                api_secret_hash=client.api_secret_hash,
                quota_limit=client.quota_limit,
                rate_limit=client.rate_limit,
                status=client.status.value,
                provider_order=client.provider_order,
            )
        )

    def get(self, client_id: uuid.UUID) -> Client | None:
        row = self._session.execute(select(ClientRow).where(ClientRow.id == client_id)).scalar()
        return _client(row) if row else None

    def get_by_api_key(self, api_key: str) -> Client | None:
        row = self._session.execute(
            select(ClientRow).where(ClientRow.api_key_prefix == api_key)
        ).scalar()
        return _client(row) if row else None


class SqlMessageRepository(MessageRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, message: Message) -> None:
        self._session.execute(
            insert(MessageRow).values(
                id=message.id,
                client_id=message.client_id,
                trace_id=message.trace_id,
                template_name=message.template_name,
                from_address=message.from_address,
                recipient=message.recipient,
                to_addresses=message.to,
                cc_addresses=message.cc,
                bcc_addresses=message.bcc,
                reply_to=message.reply_to,
                subject=message.subject,
                props=message.props,
                metadata_=message.metadata,
                status=message.status.value,
                attempts=message.attempts,
                last_error=message.last_error,
            )
        )

    def get(self, message_id: uuid.UUID) -> Message | None:
        row = self._session.execute(select(MessageRow).where(MessageRow.id == message_id)).scalar()
        return _message(row) if row else None

    def save_outcome(self, message: Message) -> None:
        self._session.execute(
            update(MessageRow)
            .where(MessageRow.id == message.id)
            .values(
                status=message.status.value,
                subject=message.subject,
                provider=message.provider,
                provider_msg_id=message.provider_msg_id,
                attempts=message.attempts,
                last_error=message.last_error,
                sent_at=message.sent_at,
                updated_at=func.now(),
            )
        )

    def append_event(
        self, message_id: uuid.UUID, event_type: EventType, detail: dict[str, Any]
    ) -> None:
        self._session.execute(
            insert(MessageEventRow).values(
                message_id=message_id, type=event_type.value, detail=detail
            )
        )

    def events(self, message_id: uuid.UUID) -> list[MessageEvent]:
        rows = self._session.execute(
            select(MessageEventRow)
            .where(MessageEventRow.message_id == message_id)
            .order_by(MessageEventRow.id)
        ).scalars()
        return [
            MessageEvent(type=EventType(row.type), at=row.at, detail=row.detail) for row in rows
        ]


def _client(row: ClientRow) -> Client:
    return Client(
        id=row.id,
        name=row.name,
        api_key_prefix=row.api_key_prefix,
        api_secret_hash=row.api_secret_hash,
        rate_limit=row.rate_limit,
        quota_limit=row.quota_limit,
        status=ClientStatus(row.status),
        provider_order=list(row.provider_order) if row.provider_order is not None else None,
        created_at=row.created_at,
    )


def _message(row: MessageRow) -> Message:
    return Message(
        id=row.id,
        client_id=row.client_id,
        trace_id=row.trace_id,
        template_name=row.template_name,
        from_address=row.from_address,
        to=list(row.to_addresses),
        cc=list(row.cc_addresses),
        bcc=list(row.bcc_addresses),
        reply_to=list(row.reply_to),
        subject=row.subject,
        props=dict(row.props),
        metadata=dict(row.metadata_),
        status=MessageStatus(row.status),
        provider=row.provider,
        provider_msg_id=row.provider_msg_id,
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sent_at=row.sent_at,
    )
