"""The PostgreSQL schema, declared once; Alembic migrations are generated from it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mailroom.domain.analytics import COUNTERS
from mailroom.domain.feedback import (
    FeedbackEventType,
    RecipientStatus,
    RejectReason,
    SuppressionReason,
)
from mailroom.domain.model import ClientStatus, MessageStatus
from mailroom.domain.scheduling import MisfirePolicy, RunStatus, RunTrigger, ScheduleState

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The repository tells a taken name from other integrity errors by this name.
CLIENT_NAME_INDEX = "uq_clients_lower_name"


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
        # Names are how operators tell clients apart: "Acme" and "acme" would not be.
        Index(CLIENT_NAME_INDEX, func.lower(text("name")), unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # The public key id the caller sends as X-Api-Key (e.g. mr_live_...).
    # The key the client was created with (its secret lives in api_keys);
    # operators may name the client by it.
    api_key_prefix: Mapped[str] = mapped_column(String(64), unique=True)
    quota_limit: Mapped[int] = mapped_column(Integer)
    # Messages per UTC day; NULL: no daily limit (the monthly quota still applies).
    daily_limit: Mapped[int | None] = mapped_column(Integer)
    rate_limit: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), server_default=ClientStatus.ACTIVE.value)
    provider_order: Mapped[list[str] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Approximate by design: written at most every few minutes per instance.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Issue 15: every key of the client acts in test mode (nothing reaches a provider).
    sandbox_mode: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Issue 21: reputation paused the client's sending (its live sends answer
    # 403 sending_paused) until an operator lifts it. On the client row, so the
    # send path reads it from the cached caller, never with a query of its own.
    sending_paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sending_paused_reason: Mapped[str | None] = mapped_column(Text)


class ApiKeyRow(Base):
    """A client's API keys (issue 15): many per client, each with its scopes and limits."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(_one_of("mode", ["live", "test"]), name="mode"),
        CheckConstraint("rate_limit IS NULL OR rate_limit >= 1", name="rate_limit"),
        Index("ix_api_keys_client_id", "client_id", "created_at"),
    )

    # The public key id (mr_live_<24 hex>): sent as X-Api-Key, inside a Bearer token.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(Text)
    # The secret replaced by the last rotation, valid until the grace period ends.
    previous_secret_hash: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Scope names (domain.tenancy.Scope values), checked before they are written.
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    mode: Mapped[str] = mapped_column(String(8))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # CIDR strings; empty: any address.
    ip_allowlist: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SendingDomainRow(Base):
    """A domain a client may send as once its DNS records are found (issue 16)."""

    __tablename__ = "sending_domains"
    __table_args__ = (
        CheckConstraint(_one_of("status", ["pending", "verified", "failing"]), name="status"),
        Index("ix_sending_domains_client_id", "client_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    # IDNA A-labels, lower case: unique across clients, one owner per domain.
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    # SES domain identity's DKIM tokens, when SES carries the mail; else [].
    ses_dkim_tokens: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # Whether registering created that identity (deleting the domain deletes
    # it then) or found it there already (left alone).
    ses_identity_created: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # What the last check found, per record: [{type, name, purpose, result, found}].
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    last_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Issue 21: the client's tracking host under this domain (a CNAME).
    tracking_host: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DkimKeyRow(Base):
    """A domain's DKIM keys, one per selector; the private key sealed (SecretKeyring)."""

    __tablename__ = "dkim_keys"
    __table_args__ = (
        CheckConstraint(_one_of("algorithm", ["rsa-sha256", "ed25519-sha256"]), name="algorithm"),
        CheckConstraint(_one_of("state", ["active", "next", "previous", "retired"]), name="state"),
    )

    domain_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sending_domains.id", ondelete="CASCADE"), primary_key=True
    )
    selector: Mapped[str] = mapped_column(String(63), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    sealed_private_key: Mapped[str] = mapped_column(Text)
    public_record: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AdminAuditRow(Base):
    """Append-only: a trigger in the migration refuses UPDATE and DELETE."""

    __tablename__ = "admin_audit_log"
    __table_args__ = (Index("ix_admin_audit_log_target", "target_type", "target_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    # Text, not a foreign key: the trail outlives whatever it is about.
    target_id: Mapped[str] = mapped_column(String(320))  # an address, for a suppression
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    source_ip: Mapped[str | None] = mapped_column(String(64))


class QueueRow(Base):
    """A client's named queue (issue 20, domain/queues.py)."""

    __tablename__ = "queues"
    __table_args__ = (
        Index("uq_queues_client_name", "client_id", "name", unique=True),
        CheckConstraint("priority BETWEEN 1 AND 10", name="priority"),
        CheckConstraint(_one_of("state", ["active", "paused", "draining"]), name="state"),
        CheckConstraint(
            "rate_limit_per_minute IS NULL OR rate_limit_per_minute >= 1", name="rate_limit"
        ),
        CheckConstraint("max_retries IS NULL OR max_retries BETWEEN 0 AND 6", name="max_retries"),
        Index(
            "ix_queues_release_requested",
            "release_requested_at",
            postgresql_where=text("release_requested_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, server_default="5")
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    # NULL: the service's MAX_SEND_ATTEMPTS and backoff.
    max_retries: Mapped[int | None] = mapped_column(Integer)
    retry_delays: Mapped[list[int] | None] = mapped_column(JSONB)
    bulk: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    state: Mapped[str] = mapped_column(String(16), server_default="active")
    # Items 4-5 of issue 20 (another branch) wire these; no foreign key yet,
    # as the smtp_configs table is not in this branch.
    smtp_config_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    provider_order: Mapped[list[str] | None] = mapped_column(JSONB)
    # Issue 21: {"opens": bool, "clicks": bool} (either) for its mail; NULL: none.
    tracking: Mapped[dict[str, bool] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Held mail is left to release (resume, drain): the scheduler's pass
    # releases it page by page and clears this (services/queues.py).
    release_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(_one_of("status", [s.value for s in MessageStatus]), name="status"),
        # Partial (issue 17): a row has a provider id only once sent, and every
        # lookup names one; unsent rows (a whole planned batch) take no entry.
        Index(
            "ix_messages_provider_msg",
            "provider",
            "provider_msg_id",
            postgresql_where=text("provider_msg_id IS NOT NULL"),
        ),
        Index("ix_messages_client_created", "client_id", "created_at"),
        # The reconciler of a later issue scans unfinished messages by age.
        Index(
            "ix_messages_queued",
            "created_at",
            postgresql_where=text("status = 'queued'"),
        ),
        # Issue 20: a queue's depth, its oldest unsent message, and resume's
        # release of held rows in order.
        Index("ix_messages_queue_status_created", "queue_id", "status", "created_at"),
        # Issue 20: a default queue's held rows (queue_id NULL) in order, for
        # the paged release, without walking the client's sent mail.
        Index(
            "ix_messages_held_client",
            "client_id",
            "created_at",
            postgresql_where=text("status = 'held'"),
        ),
        # Issue 20: each client's messages under a claim (the in-flight cap).
        Index(
            "ix_messages_sending_client",
            "client_id",
            postgresql_where=text("status = 'sending'"),
        ),
        # Issue 7's reconciler: unfinished rows (queued or claimed) by last change.
        Index(
            "ix_messages_unfinished",
            "updated_at",
            postgresql_where=text("status IN ('queued', 'sending')"),
        ),
        Index(
            "uq_messages_batch_index",
            "batch_id",
            "batch_index",
            unique=True,
            postgresql_where=text("batch_id IS NOT NULL"),
        ),
        Index(
            "uq_messages_batch_address",
            "batch_id",
            "batch_address",
            unique=True,
            postgresql_where=text("batch_address IS NOT NULL"),
        ),
        # Issue 18: health's oldest overdue row and the scheduler's stale ones;
        # the scheduler's scan of the rows it has still to release.
        Index(
            "ix_messages_scheduled",
            "scheduled_at",
            postgresql_where=text("status = 'scheduled'"),
        ),
        Index(
            "ix_messages_unreleased",
            "scheduled_at",
            postgresql_where=text("status = 'scheduled' AND enqueued_at IS NULL"),
        ),
        Index(
            "ix_messages_schedule_run",
            "schedule_run_id",
            postgresql_where=text("schedule_run_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id"))
    trace_id: Mapped[str] = mapped_column(String(64))
    template_name: Mapped[str] = mapped_column(String(128))
    # An uploaded template's version: the one the send pinned or, since issue 15,
    # the newest when it was accepted (what its trial render checked).
    template_version: Mapped[int | None] = mapped_column(Integer)
    # Whose uploaded template that version is: true the shared one, false the
    # message's client's own; NULL for file templates (and rows from before).
    template_shared: Mapped[bool | None] = mapped_column(Boolean)
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
    # Worker claims (issue 7): the claim's owner and lease, a retry's due time,
    # and how often workers claimed the row (a crash loop is bounded by it).
    claim_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claims: Mapped[int] = mapped_column(Integer, server_default="0")
    # Test mode (issue 15): handed to the sandbox provider, never to a real one.
    is_test: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Issue 16: the caller's headers, tags, bulk flag, campaign and own
    # List-Unsubscribe URL (domain.model.SendOptions); '{}' for none.
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # Bulk batches (issue 17): the batch, the recipient's place in it (a
    # restarted planner cannot write it twice) and, unless the batch allows
    # duplicates, the bare address (an address named twice is sent once).
    # No foreign key (migration w17c01): the planner writes it from the batch
    # row it holds locked, and batches are never deleted; the check was a
    # tenth of each chunk's statement.
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    batch_index: Mapped[int | None] = mapped_column(Integer)
    batch_address: Mapped[str | None] = mapped_column(Text)
    # Issue 18: when a ``scheduled`` row is due; when the scheduler (or the
    # send API, for a time within its look-ahead) put it on the queue. NULL
    # ``enqueued_at``: the scheduler still has to. Whichever route writes a
    # row ``scheduled`` with a ``scheduled_at``, the scheduler sends it.
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The recurring schedule and run that created the message (no foreign
    # key: a deleted schedule keeps its messages' history).
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    schedule_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # Issue 20: the queue the send named; NULL is the client's default queue
    # (and every row from before queues existed). A deleted queue's unsent
    # mail falls back to the default queue rather than vanish.
    queue_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("queues.id", ondelete="SET NULL")
    )


class IdempotencyKeyRow(Base):
    """POST /v1/send's Idempotency-Key, per client, kept 24 h (issue 7)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the request's canonical JSON: the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    # The request holding the key; a release only removes its own hold.
    owner: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    # Set in the transaction that writes the message row: NULL means in flight.
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id"))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MessageEventRow(Base):
    """Append-only: a trigger in the migration refuses UPDATE and DELETE."""

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


# --- delivery feedback (issue 5) ---------------------------------------------


class DeliveryEventRow(Base):
    """Every verified provider event, raw payload included; orphans have no message_id."""

    __tablename__ = "delivery_events"
    __table_args__ = (
        # The deduplication key: a provider retry or a second arrival path
        # (SNS over HTTPS and SNS to Lambda) inserts nothing the second time.
        Index(
            "uq_delivery_events_provider_event",
            "provider",
            "provider_event_id",
            "recipient",
            unique=True,
        ),
        # Orphans are looked up by the provider's message id when the message
        # turns up later.
        Index(
            "ix_delivery_events_orphans",
            "provider",
            "provider_msg_id",
            postgresql_where=text("message_id IS NULL"),
        ),
        CheckConstraint(
            _one_of("event_type", [t.value for t in FeedbackEventType]), name="event_type"
        ),
        CheckConstraint(
            "reject_reason IS NULL OR " + _one_of("reject_reason", [r.value for r in RejectReason]),
            name="reject_reason",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str] = mapped_column(String(255))
    # '' rather than NULL when the event names no recipient, so the unique
    # index still deduplicates it.
    recipient: Mapped[str] = mapped_column(Text, server_default="")
    event_type: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    provider_msg_id: Mapped[str | None] = mapped_column(String(255))
    message_id_header: Mapped[str | None] = mapped_column(String(998))
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id"), index=True)
    reject_reason: Mapped[str | None] = mapped_column(String(16))
    response_text: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class MessageRecipientRow(Base):
    """One row per recipient of a message: its outcome, and what recipient filters use."""

    __tablename__ = "message_recipients"
    __table_args__ = (
        Index("ix_message_recipients_address", "address"),
        CheckConstraint(_one_of("kind", ["to", "cc", "bcc", "other"]), name="kind"),
        CheckConstraint(
            "status IS NULL OR " + _one_of("status", [s.value for s in RecipientStatus]),
            name="status",
        ),
    )

    # No foreign key (issue 17, migration w17p01): a recipient row is written
    # with its message, and messages are never deleted; the check cost the
    # planner a lookup and a row lock per recipient.
    message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # The bare, lowercased address (domain.feedback.bare_address).
    address: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    # NULL until something is known about this recipient alone.
    status: Mapped[str | None] = mapped_column(String(16))
    # domain.feedback.RECIPIENT_RANK of status: updates only move it up.
    rank: Mapped[int] = mapped_column(Integer, server_default="0")
    reject_reason: Mapped[str | None] = mapped_column(String(16))
    response_text: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SuppressionRow(Base):
    """Addresses not to mail: for one client, or for every client when client_id is NULL."""

    __tablename__ = "suppressions"
    __table_args__ = (
        # NULLS NOT DISTINCT (PostgreSQL 15+): one global entry per address too.
        # Test traffic's entries are a scope of their own (issue 15).
        Index(
            "uq_suppressions_client_address",
            "client_id",
            "address",
            "is_test",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
        Index("ix_suppressions_address", "address"),
        CheckConstraint(_one_of("reason", [r.value for r in SuppressionReason]), name="reason"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    client_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE")
    )
    address: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(16))
    # What created it: "ses:<event id>", "admin", ...
    source: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(Text)
    # Created by test traffic: screens test messages only, never live ones.
    is_test: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class InlineContentRow(Base):
    """A send's inline content (issue 17), once per content hash however many sends carry it.

    Messages name it ``inline:<content_hash>`` in ``template_name``: no
    foreign key, so the content is written before (not with) the rows that
    use it, by an INSERT that does nothing when it is there already.
    """

    __tablename__ = "inline_contents"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


_SQL_FALSE = text("false")


class TemplateVersionRow(Base):
    """Uploaded templates; a new upload is a new version of its (name, owner).

    ``client_id`` owns it; NULL is a shared template every client may use.
    """

    __tablename__ = "template_versions"
    __table_args__ = (
        # NULLS NOT DISTINCT (PostgreSQL 15+): shared versions are unique too.
        Index(
            "uq_template_versions_name_owner_version",
            "name",
            "client_id",
            "version",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    props_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    sample_props: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Sends using this version are bulk mail: one-click unsubscribe (issue 16).
    # (The ``text`` column above shadows sqlalchemy's text() in this body.)
    bulk: Mapped[bool] = mapped_column(Boolean, server_default=_SQL_FALSE)
    # Issue 21: its sends' tracking default ({"opens", "clicks"}); NULL: none.
    tracking: Mapped[dict[str, bool] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- inbound mail (issue 16) ------------------------------------------------------------

INBOUND_OUTCOMES = [
    "applied",  # a bounce or complaint tied to its message by a valid VERP signature
    "unmatched",  # no VERP address: kept for review, nothing changed
    "bad_signature",  # a VERP address whose HMAC did not verify: kept, nothing changed
    "auto_reply",  # an out-of-office answer: never a bounce
    "unrecognised",  # signed, but no report found in it
    "unsubscribed",  # mail to the List-Unsubscribe mailto: address
]


class InboundMailRow(Base):
    """Every piece of mail the bounce domain received, and what became of it."""

    __tablename__ = "inbound_mail"
    __table_args__ = (
        CheckConstraint(_one_of("outcome", INBOUND_OUTCOMES), name="outcome"),
        # A redelivery of the same bytes (an SES retry, an SMTP resend) is
        # recorded and applied once.
        Index("uq_inbound_mail_raw_sha256", "raw_sha256", unique=True),
        Index("ix_inbound_mail_outcome_received", "outcome", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    outcome: Mapped[str] = mapped_column(String(16))
    # No foreign key: a review record outlives the message it names.
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    envelope_recipients: Mapped[list[str]] = mapped_column(JSONB)
    sender: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    report_format: Mapped[str] = mapped_column(String(24))
    kind: Mapped[str] = mapped_column(String(16))
    # The recipient reports as parsed (address, kind, status, diagnostic).
    reports: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    # SHA-256 of the envelope recipients and the raw bytes: the redelivery key.
    raw_sha256: Mapped[str] = mapped_column(String(64))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    raw_truncated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class SoftBounceRow(Base):
    """Soft bounces in a row per address; reset by suppression or after a quiet spell."""

    __tablename__ = "soft_bounces"

    address: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- outbound webhooks (issue 19) --------------------------------------------


class WebhookEndpointRow(Base):
    """A client's webhook endpoint; its signing secrets are sealed (domain/sealed_secrets.py)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_client_id", "client_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    # Public type names; NULL: every type.
    event_types: Mapped[list[str] | None] = mapped_column(JSONB)
    # email.opened for every open ("all") or only a message's first human one ("first").
    opens: Mapped[str] = mapped_column(String(8), server_default="all")
    secret_sealed: Mapped[str] = mapped_column(Text)
    previous_secret_sealed: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookEventRow(Base):
    """The outbox: every message event (copied by a trigger) and the client's endpoint events.

    ``feed_seq`` is given by the relay, one relay at a time, in the order rows
    became visible: the event feed's cursor, so a reader never skips a row
    that committed late.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_unrelayed", "id", postgresql_where=text("feed_seq IS NULL")),
        Index("ix_webhook_events_client_feed", "client_id", "feed_seq"),
        Index("uq_webhook_events_feed_seq", "feed_seq", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    # Text, not foreign keys: the outbox is written by a trigger for every
    # message event and must never make that INSERT fail.
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    source_event_id: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    recipients: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    is_test: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    feed_seq: Mapped[int | None] = mapped_column(BigInteger)


class WebhookDeliveryRow(Base):
    """One event to one endpoint, until it succeeds or its attempts run out."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(
            _one_of("status", ["pending", "succeeded", "failed", "skipped"]), name="status"
        ),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Handed to the dispatcher queue until then: the relay does not send it again.
    enqueued_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A dispatcher holds it until then; after, another may take it over.
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Which claim holds it: a late outcome of a lapsed claim settles nothing.
    claim_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookAttemptRow(Base):
    """Each HTTP attempt of a delivery, as ``GET /v1/webhooks/{id}/deliveries`` shows it."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer)
    # The first 4 KB of the answer.
    response_excerpt: Mapped[str] = mapped_column(Text, server_default="")
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- bulk batches (issue 17) -------------------------------------------------

BATCH_STATUSES = [
    # Issue 18: waiting for its scheduled_at (migration w18cbat01).
    "scheduled",
    "awaiting_upload",
    "accepted",
    "planning",
    "sending",
    "finished",
    "cancelled",
    "failed",
]


class BatchRow(Base):
    """One content for many recipients, and its progress counters.

    The ``*_count`` columns are kept by the ``batch_counts`` trigger on
    ``messages`` (migration w17bat01); the ``plan_*`` columns are the
    planner's resumable cursor, advanced in the transaction that writes the
    rows they cover.
    """

    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(_one_of("status", BATCH_STATUSES), name="status"),
        CheckConstraint(_one_of("source", ["inline", "upload"]), name="source"),
        Index("ix_batches_client_created", "client_id", "created_at"),
        # The scheduler's scan of batches waiting for their time (issue 18).
        Index(
            "ix_batches_scheduled", "scheduled_at", postgresql_where=text("status = 'scheduled'")
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id"))
    status: Mapped[str] = mapped_column(String(16))
    trace_id: Mapped[str] = mapped_column(String(64))
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    allow_duplicates: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    is_test: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    source: Mapped[str] = mapped_column(String(8))
    upload_format: Mapped[str | None] = mapped_column(String(8))
    total: Mapped[int | None] = mapped_column(Integer)
    planned: Mapped[int] = mapped_column(Integer, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, server_default="0")
    suppressed: Mapped[int] = mapped_column(Integer, server_default="0")
    duplicates: Mapped[int] = mapped_column(Integer, server_default="0")
    queued_count: Mapped[int] = mapped_column(Integer, server_default="0")
    sent_count: Mapped[int] = mapped_column(Integer, server_default="0")
    delivered_count: Mapped[int] = mapped_column(Integer, server_default="0")
    bounced_count: Mapped[int] = mapped_column(Integer, server_default="0")
    failed_count: Mapped[int] = mapped_column(Integer, server_default="0")
    complained_count: Mapped[int] = mapped_column(Integer, server_default="0")
    cancelled_count: Mapped[int] = mapped_column(Integer, server_default="0")
    handed_over: Mapped[int] = mapped_column(Integer, server_default="0")
    plan_records: Mapped[int] = mapped_column(Integer, server_default="0")
    plan_offset: Mapped[int] = mapped_column(BigInteger, server_default="0")
    plan_line: Mapped[int] = mapped_column(Integer, server_default="0")
    enqueued_through: Mapped[int] = mapped_column(Integer, server_default="-1")
    plan_done: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Issue 18: when the batch is planned; when the planner was asked for it;
    # the recurring schedule and run that created it.
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    schedule_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class BatchInputRow(Base):
    """An inline batch's recipients as posted (at most 10,000), until the planner reads them."""

    __tablename__ = "batch_inputs"

    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    recipients: Mapped[list[Any]] = mapped_column(JSONB)


class BatchIssueRow(Base):
    """A recipient that got no message: a bad address or line, suppressed, or a duplicate."""

    __tablename__ = "batch_issues"
    __table_args__ = (
        CheckConstraint(_one_of("status", ["rejected", "suppressed", "duplicate"]), name="status"),
    )

    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    batch_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(Text)
    line: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)


# --- scheduling (issue 18) -----------------------------------------------------


class ScheduleRow(Base):
    """A recurring send: a /v1/send body fired by a cron expression in a time zone."""

    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint(_one_of("state", [s.value for s in ScheduleState]), name="state"),
        CheckConstraint(
            _one_of("misfire_policy", [p.value for p in MisfirePolicy]), name="misfire_policy"
        ),
        CheckConstraint("misfire_grace_seconds >= 0", name="misfire_grace_seconds"),
        # A /v1/send payload or a /v1/batches one, never both (migration w18cbat01).
        CheckConstraint("num_nonnulls(send, batch) = 1", name="one_payload"),
        Index("ix_schedules_client_created", "client_id", "created_at"),
        # The scheduler's scan of due schedules.
        Index("ix_schedules_due", "next_run_at", postgresql_where=text("state = 'active'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    # none_as_null: the payload not used is SQL NULL (the CHECK counts it), not JSON null.
    send: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    batch: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    state: Mapped[str] = mapped_column(String(16), server_default=ScheduleState.ACTIVE.value)
    misfire_policy: Mapped[str] = mapped_column(String(8))
    misfire_grace_seconds: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Created by a test key (issue 15): its runs' messages are test messages.
    is_test: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ScheduleRunRow(Base):
    """One run of a schedule: what it sent, or why it failed or was skipped."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        CheckConstraint(_one_of("status", [s.value for s in RunStatus]), name="status"),
        CheckConstraint(_one_of("trigger", [t.value for t in RunTrigger]), name="trigger"),
        Index("ix_schedule_runs_schedule_started", "schedule_id", "started_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    schedule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    fire_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message_ids: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # A batch payload's run: the batch it created (issue 18).
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class SmtpConfigRow(Base):
    """A client's own SMTP relay (issue 20, item 4); the password sealed (SecretKeyring)."""

    __tablename__ = "smtp_configs"
    __table_args__ = (
        CheckConstraint(_one_of("security", ["none", "starttls", "tls"]), name="security"),
        CheckConstraint("port BETWEEN 1 AND 65535", name="port"),
        UniqueConstraint("client_id", "name"),
        Index(
            "ix_smtp_configs_one_default",
            "client_id",
            unique=True,
            postgresql_where=text("is_default"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    security: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(255))
    sealed_password: Mapped[str | None] = mapped_column(Text)
    pool_size: Mapped[int] = mapped_column(Integer, server_default="1")
    timeout_seconds: Mapped[float] = mapped_column(Float, server_default="10")
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    is_default: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Per-minute ceilings per recipient domain group through this relay: {"gmail": 300}.
    throttle_per_minute: Mapped[dict[str, int]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- open and click tracking (issue 21) ---------------------------------------


class TrackingLinkRow(Base):
    """A tracked message's tokens: its pixel, its rewritten links, its honeypot.

    The redirect target is ``url``, read by token: a request never supplies it.
    """

    __tablename__ = "tracking_links"
    __table_args__ = (
        CheckConstraint(_one_of("kind", ["open", "click", "honeypot"]), name="kind"),
        Index("ix_tracking_links_message_id", "message_id"),
    )

    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    link_index: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class TrackingHitRow(Base):
    """Every recorded fetch of a pixel or link, with what made it look like a machine."""

    __tablename__ = "tracking_hits"
    __table_args__ = (
        CheckConstraint(_one_of("kind", ["open", "click", "honeypot"]), name="kind"),
        Index("ix_tracking_hits_message_id", "message_id", "at"),
        Index(
            "uq_tracking_hits_hit_id",
            "hit_id",
            unique=True,
            postgresql_where=text("hit_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(
        ForeignKey("tracking_links.token", ondelete="CASCADE"), nullable=False
    )
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    link_index: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    user_agent: Mapped[str] = mapped_column(String(512), server_default="", nullable=False)
    ip: Mapped[str] = mapped_column(String(64), server_default="", nullable=False)
    machine: Mapped[bool] = mapped_column(Boolean, nullable=False)
    signals: Mapped[list[str]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), nullable=False
    )
    # Given when the hit was queued (issue 21 item 3): the consumer writes it once.
    hit_id: Mapped[str | None] = mapped_column(String(32))


# --- delivery analytics and reputation (issue 21 items 4 and 5) -----------------

# The counter columns below are spelt out (Mapped needs them by name); a
# test holds them equal to domain.analytics.COUNTERS.
ANALYTICS_COUNTERS = COUNTERS


class AnalyticsPendingRow(Base):
    """Message events the roll-up has still to count; a trigger on message_events fills it.

    A queue, not a cursor: the roll-up deletes what it counts in the same
    transaction as it adds it, so each event is counted exactly once however
    many roll-ups run and whatever order writers commit in.
    """

    __tablename__ = "analytics_pending"

    event_id: Mapped[int] = mapped_column(
        ForeignKey("message_events.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )


class AnalyticsFirstRow(Base):
    """A message's first human open and first human click: what makes a count unique."""

    __tablename__ = "analytics_firsts"
    __table_args__ = (CheckConstraint(_one_of("kind", ["open", "click"]), name="kind"),)

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)


class AnalyticsHourlyRow(Base):
    """Counts per UTC hour and every dimension at once: for queries with two or more filters."""

    __tablename__ = "analytics_hourly"
    # A query with two or more filters reads through the index of one of
    # them (PostgreSQL picks the most selective, or ANDs two bitmaps) rather
    # than every row of the client's range; the counters are not indexed, so
    # the roll-up's updates stay HOT.
    __table_args__ = (
        Index("ix_analytics_hourly_queue", "client_id", "is_test", "queue", "hour"),
        Index("ix_analytics_hourly_template", "client_id", "is_test", "template", "hour"),
        Index(
            "ix_analytics_hourly_sending_domain", "client_id", "is_test", "sending_domain", "hour"
        ),
        Index(
            "ix_analytics_hourly_recipient_group",
            "client_id",
            "is_test",
            "recipient_group",
            "hour",
        ),
    )

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    is_test: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    template: Mapped[str] = mapped_column(String(128), primary_key=True)
    sending_domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    recipient_group: Mapped[str] = mapped_column(String(16), primary_key=True)
    sent: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    delivered: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    hard_bounces: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    soft_bounces: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    complaints: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    opens: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    machine_opens: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    unique_opens: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    clicks: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    machine_clicks: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    unique_clicks: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    unsubscribes: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    suppressed: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    failed: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)


class AnalyticsHourlyByRow(Base):
    """Counts per UTC hour cut by one dimension (or none: ``all``), tags included.

    A query with no filter or one reads one row per hour from here, so 90
    days are ~2,200 rows whatever the volume; ``all`` is the client's total.
    """

    __tablename__ = "analytics_hourly_by"
    __table_args__ = (
        CheckConstraint(
            _one_of(
                "dimension",
                ["all", "queue", "template", "sending_domain", "recipient_group", "tag"],
            ),
            name="dimension",
        ),
        # The operator's view across clients.
        Index("ix_analytics_hourly_by_dimension", "dimension", "value", "is_test", "hour"),
    )

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    is_test: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    sent: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    delivered: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    hard_bounces: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    soft_bounces: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    complaints: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    opens: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    machine_opens: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    unique_opens: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    clicks: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    machine_clicks: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    unique_clicks: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    unsubscribes: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    suppressed: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)
    failed: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)


class ReputationStateRow(Base):
    """Each client's (and each of its sending domains') last judged reputation.

    ``sending_domain`` '' is the client as a whole, the one that throttles and pauses.
    """

    __tablename__ = "reputation_states"
    __table_args__ = (
        CheckConstraint(_one_of("state", ["ok", "warn", "throttle", "pause"]), name="state"),
    )

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    sending_domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    sent: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hard_bounces: Mapped[int] = mapped_column(BigInteger, nullable=False)
    complaints: Mapped[int] = mapped_column(BigInteger, nullable=False)
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # An operator's lift restarts the window: what came before it is not held
    # against the client again (else a lift would be undone at once).
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
