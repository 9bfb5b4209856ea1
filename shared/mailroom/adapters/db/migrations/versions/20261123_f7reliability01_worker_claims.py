"""worker claims (sending status, lease, claims, next attempt) and idempotency keys

Revision ID: f7reliability01
Revises: m1merge01
Create Date: 2026-11-23 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f7reliability01"
down_revision: str | None = "m1merge01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('queued', 'sent', 'delivered', 'bounced', 'failed', 'spam')"
NEW_STATUSES = "status IN ('queued', 'sending', 'sent', 'delivered', 'bounced', 'failed', 'spam')"


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("client_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("owner", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("message_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_idempotency_keys_client_id_clients")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_idempotency_keys_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("client_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    op.add_column("messages", sa.Column("claim_token", postgresql.UUID(as_uuid=True)))
    op.add_column("messages", sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("claims", sa.Integer(), server_default="0", nullable=False))
    op.drop_constraint(op.f("ck_messages_status"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_status"), "messages", NEW_STATUSES)
    op.create_index(
        "ix_messages_unfinished",
        "messages",
        ["updated_at"],
        postgresql_where=sa.text("status IN ('queued', 'sending')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_messages_unfinished",
        table_name="messages",
        postgresql_where=sa.text("status IN ('queued', 'sending')"),
    )
    # A claimed row goes back to queued: the reconciler of this revision is gone
    # too, so the queue's redelivery is what sends it.
    op.execute("UPDATE messages SET status = 'queued' WHERE status = 'sending'")
    op.drop_constraint(op.f("ck_messages_status"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_status"), "messages", OLD_STATUSES)
    op.drop_column("messages", "claims")
    op.drop_column("messages", "next_attempt_at")
    op.drop_column("messages", "lease_expires_at")
    op.drop_column("messages", "claim_token")
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
