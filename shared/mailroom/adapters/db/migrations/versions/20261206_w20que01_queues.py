"""queues, messages.queue_id and the held status: per-client queues (issue 20)

Revision ID: w20que01
Revises: w21trk01
Create Date: 2026-12-06 11:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "w20que01"
down_revision: str | None = "w21trk01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# After w18sch01 (scheduled) and w17bat01 (cancelled), which came before this revision.
OLD_STATUSES = (
    "status IN ('scheduled', 'queued', 'sending', 'sent', 'delivered', 'bounced', 'failed', "
    "'spam', 'cancelled')"
)
NEW_STATUSES = (
    "status IN ('scheduled', 'queued', 'sending', 'held', 'sent', 'delivered', 'bounced', "
    "'failed', 'spam', 'cancelled')"
)


def upgrade() -> None:
    op.create_table(
        "queues",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="5", nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True),
        sa.Column("max_retries", sa.Integer(), nullable=True),
        sa.Column("retry_delays", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("bulk", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("smtp_config_id", sa.UUID(), nullable=True),
        sa.Column("provider_order", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
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
        sa.CheckConstraint("priority BETWEEN 1 AND 10", name=op.f("ck_queues_priority")),
        sa.CheckConstraint(
            "state IN ('active', 'paused', 'draining')", name=op.f("ck_queues_state")
        ),
        sa.CheckConstraint(
            "rate_limit_per_minute IS NULL OR rate_limit_per_minute >= 1",
            name=op.f("ck_queues_rate_limit"),
        ),
        sa.CheckConstraint(
            "max_retries IS NULL OR max_retries BETWEEN 0 AND 6",
            name=op.f("ck_queues_max_retries"),
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_queues_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queues")),
    )
    op.create_index("uq_queues_client_name", "queues", ["client_id", "name"], unique=True)
    op.add_column("messages", sa.Column("queue_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_messages_queue_id_queues"),
        "messages",
        "queues",
        ["queue_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index(
        "ix_messages_queue_status_created", "messages", ["queue_id", "status", "created_at"]
    )
    op.create_index(
        "ix_messages_sending_client",
        "messages",
        ["client_id"],
        postgresql_where=sa.text("status = 'sending'"),
    )
    op.drop_constraint(op.f("ck_messages_status"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_status"), "messages", NEW_STATUSES)


def downgrade() -> None:
    # Held rows would break the old constraint: they go back on the queue
    # (the reconciler re-enqueues queued rows that have no SQS message).
    op.execute("UPDATE messages SET status = 'queued' WHERE status = 'held'")
    op.drop_constraint(op.f("ck_messages_status"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_status"), "messages", OLD_STATUSES)
    op.drop_index("ix_messages_sending_client", table_name="messages")
    op.drop_index("ix_messages_queue_status_created", table_name="messages")
    op.drop_constraint(op.f("fk_messages_queue_id_queues"), "messages", type_="foreignkey")
    op.drop_column("messages", "queue_id")
    op.drop_index("uq_queues_client_name", table_name="queues")
    op.drop_table("queues")
