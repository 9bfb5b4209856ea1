"""delivery feedback: delivery_events, message_recipients, suppressions

Revision ID: e5feedback01
Revises: a2provorder01
Create Date: 2026-11-23 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e5feedback01"
down_revision: str | None = "a2provorder01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=True),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')",
            name=op.f("ck_suppressions_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_suppressions_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
    )
    op.create_index("ix_suppressions_address", "suppressions", ["address"], unique=False)
    # NULLS NOT DISTINCT needs PostgreSQL 15: one global (client_id NULL) entry per address.
    op.create_index(
        "uq_suppressions_client_address",
        "suppressions",
        ["client_id", "address"],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_event_id", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.Text(), server_default="", nullable=False),
        sa.Column("event_type", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("provider_msg_id", sa.String(length=255), nullable=True),
        sa.Column("message_id_header", sa.String(length=998), nullable=True),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("reject_reason", sa.String(length=16), nullable=True),
        sa.Column("response_text", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "raw",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "event_type IN ('queued', 'sent', 'delivered', 'deferred', 'bounced', 'complained', "
            "'rejected', 'opened', 'clicked', 'unsubscribed', 'unknown')",
            name=op.f("ck_delivery_events_event_type"),
        ),
        sa.CheckConstraint(
            "reject_reason IS NULL OR reject_reason IN ('invalid', 'bounced', 'timed_out', "
            "'blocked', 'spam', 'unsubscribed', 'other')",
            name=op.f("ck_delivery_events_reject_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_delivery_events_message_id_messages"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_events")),
    )
    op.create_index(
        op.f("ix_delivery_events_message_id"), "delivery_events", ["message_id"], unique=False
    )
    op.create_index(
        "ix_delivery_events_orphans",
        "delivery_events",
        ["provider", "provider_msg_id"],
        unique=False,
        postgresql_where=sa.text("message_id IS NULL"),
    )
    op.create_index(
        "uq_delivery_events_provider_event",
        "delivery_events",
        ["provider", "provider_event_id", "recipient"],
        unique=True,
    )
    op.create_table(
        "message_recipients",
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("rank", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reject_reason", sa.String(length=16), nullable=True),
        sa.Column("response_text", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('to', 'cc', 'bcc', 'other')", name=op.f("ck_message_recipients_kind")
        ),
        sa.CheckConstraint(
            "status IS NULL OR status IN ('queued', 'sent', 'deferred', 'delivered', 'bounced', "
            "'rejected', 'complained', 'suppressed', 'failed')",
            name=op.f("ck_message_recipients_status"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_recipients_message_id_messages"),
        ),
        sa.PrimaryKeyConstraint("message_id", "address", name=op.f("pk_message_recipients")),
    )
    op.create_index(
        "ix_message_recipients_address", "message_recipients", ["address"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_message_recipients_address", table_name="message_recipients")
    op.drop_table("message_recipients")
    op.drop_index("uq_delivery_events_provider_event", table_name="delivery_events")
    op.drop_index(
        "ix_delivery_events_orphans",
        table_name="delivery_events",
        postgresql_where=sa.text("message_id IS NULL"),
    )
    op.drop_index(op.f("ix_delivery_events_message_id"), table_name="delivery_events")
    op.drop_table("delivery_events")
    op.drop_index("uq_suppressions_client_address", table_name="suppressions")
    op.drop_index("ix_suppressions_address", table_name="suppressions")
    op.drop_table("suppressions")
