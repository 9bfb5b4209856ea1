"""The PostgreSQL schema, declared once; Alembic migrations are generated from it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mailroom.domain.model import ClientStatus, MessageStatus

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _one_of(column: str, values: list[str]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ClientRow(Base):
    __tablename__ = "clients"
    # Statuses are text with a CHECK rather than PG enums: adding a status later
    # is one constraint swap, and downgrades leave no orphaned types behind.
    __table_args__ = (
        CheckConstraint(_one_of("status", [s.value for s in ClientStatus]), name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # The public key id the caller sends as X-Api-Key (e.g. mr_live_...).
    api_key_prefix: Mapped[str] = mapped_column(String(64), unique=True)
    api_secret_hash: Mapped[str] = mapped_column(Text)
    quota_limit: Mapped[int] = mapped_column(Integer)
    rate_limit: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), server_default=ClientStatus.ACTIVE.value)
    provider_order: Mapped[list[str] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(_one_of("status", [s.value for s in MessageStatus]), name="status"),
        Index("ix_messages_provider_msg", "provider", "provider_msg_id"),
        Index("ix_messages_client_created", "client_id", "created_at"),
        # The reconciler of a later issue scans unfinished messages by age.
        Index(
            "ix_messages_queued",
            "created_at",
            postgresql_where=text("status = 'queued'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id"))
    trace_id: Mapped[str] = mapped_column(String(64))
    template_name: Mapped[str] = mapped_column(String(128))
    from_address: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(Text)
    to_addresses: Mapped[list[str]] = mapped_column(JSONB)
    cc_addresses: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    bcc_addresses: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    reply_to: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    subject: Mapped[str | None] = mapped_column(Text)
    props: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    status: Mapped[str] = mapped_column(String(16), server_default=MessageStatus.QUEUED.value)
    provider: Mapped[str | None] = mapped_column(String(64))
    provider_msg_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MessageEventRow(Base):
    """Append-only: a trigger in the migration refuses UPDATE and DELETE."""

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
