"""batches, batch_inputs, batch_issues, messages.batch_*: bulk batches (issue 17, items 3 and 5)

Revision ID: w17bat01
Revises: w19whk01
Create Date: 2026-12-06 10:45:00

A batch is one content sent to many recipients. The planner writes one
message row per recipient, keyed by (batch_id, batch_index) so a planner
that is killed and restarted can never write a recipient twice, and by
(batch_id, batch_address) unless the batch allows duplicates, so an address
named twice is sent once. Recipients that get no message (a bad address, a
malformed line, a suppressed or duplicate address) are one ``batch_issues``
row each, with the reason.

The progress counters live on the batch row and a statement-level trigger
on ``messages`` keeps them: whatever changes a batch message's status (the
worker, delivery feedback, the reconciler, a cancel) moves the counts by
the same statement, so reading progress is one row at any batch size.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "w17bat01"
down_revision: str | None = "w19whk01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('queued', 'sending', 'sent', 'delivered', 'bounced', 'failed', 'spam')"
NEW_STATUSES = (
    "status IN ('queued', 'sending', 'sent', 'delivered', 'bounced', 'failed', 'spam', 'cancelled')"
)

# One UPDATE per batch touched by the statement, not one per row: the worker
# records ten outcomes in one statement, the cancel thousands.
COUNT_TRIGGER = """
CREATE FUNCTION batch_counts_follow_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH delta AS (
        SELECT batch_id, status, sum(n) AS n
        FROM (
            SELECT batch_id, status, 1 AS n FROM new_rows WHERE batch_id IS NOT NULL
            UNION ALL
            SELECT batch_id, status, -1 AS n FROM old_rows WHERE batch_id IS NOT NULL
        ) AS changes
        GROUP BY batch_id, status
        HAVING sum(n) <> 0
    ), per_batch AS (
        SELECT batch_id,
               coalesce(sum(n) FILTER (WHERE status IN ('queued', 'sending')), 0) AS queued,
               coalesce(sum(n) FILTER (WHERE status = 'sent'), 0) AS sent,
               coalesce(sum(n) FILTER (WHERE status = 'delivered'), 0) AS delivered,
               coalesce(sum(n) FILTER (WHERE status = 'bounced'), 0) AS bounced,
               coalesce(sum(n) FILTER (WHERE status = 'failed'), 0) AS failed,
               coalesce(sum(n) FILTER (WHERE status = 'spam'), 0) AS complained,
               coalesce(sum(n) FILTER (WHERE status = 'cancelled'), 0) AS cancelled
        FROM delta
        GROUP BY batch_id
    )
    UPDATE batches AS b
    SET queued_count = b.queued_count + p.queued,
        sent_count = b.sent_count + p.sent,
        delivered_count = b.delivered_count + p.delivered,
        bounced_count = b.bounced_count + p.bounced,
        failed_count = b.failed_count + p.failed,
        complained_count = b.complained_count + p.complained,
        cancelled_count = b.cancelled_count + p.cancelled,
        -- Handed to a provider: counted once, the first time a message leaves
        -- queued for sent (later feedback moves it on, never back).
        handed_over = b.handed_over + (
            SELECT count(*) FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
            WHERE n.batch_id = p.batch_id
              AND o.status IN ('queued', 'sending')
              AND n.status IN ('sent', 'delivered', 'bounced', 'spam')),
        updated_at = now(),
        status = CASE
            WHEN b.status = 'sending' AND b.plan_done AND b.queued_count + p.queued = 0
                THEN 'finished'
            ELSE b.status END,
        finished_at = CASE
            WHEN b.status = 'sending' AND b.plan_done AND b.queued_count + p.queued = 0
                THEN now()
            ELSE b.finished_at END
    FROM per_batch AS p
    WHERE b.id = p.batch_id;
    RETURN NULL;
END;
$$;
"""


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("client_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        sa.Column("content", postgresql.JSONB(), nullable=False),
        sa.Column("allow_duplicates", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("upload_format", sa.String(length=8)),
        sa.Column("total", sa.Integer()),
        sa.Column("planned", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rejected", sa.Integer(), server_default="0", nullable=False),
        sa.Column("suppressed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("duplicates", sa.Integer(), server_default="0", nullable=False),
        sa.Column("queued_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sent_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("delivered_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("bounced_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("complained_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cancelled_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("handed_over", sa.Integer(), server_default="0", nullable=False),
        sa.Column("plan_records", sa.Integer(), server_default="0", nullable=False),
        sa.Column("plan_offset", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("plan_line", sa.Integer(), server_default="0", nullable=False),
        sa.Column("enqueued_through", sa.Integer(), server_default="-1", nullable=False),
        sa.Column("plan_done", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('awaiting_upload', 'accepted', 'planning', 'sending', 'finished', "
            "'cancelled', 'failed')",
            name=op.f("ck_batches_status"),
        ),
        sa.CheckConstraint("source IN ('inline', 'upload')", name=op.f("ck_batches_source")),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_batches_client_id_clients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    op.create_index("ix_batches_client_created", "batches", ["client_id", "created_at"])
    op.create_table(
        "batch_inputs",
        sa.Column("batch_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("recipients", postgresql.JSONB(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_batch_inputs_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_batch_inputs")),
    )
    op.create_table(
        "batch_issues",
        sa.Column("batch_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("address", sa.Text()),
        sa.Column("line", sa.Integer()),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "status IN ('rejected', 'suppressed', 'duplicate')", name=op.f("ck_batch_issues_status")
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_batch_issues_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "batch_index", name=op.f("pk_batch_issues")),
    )
    op.add_column("messages", sa.Column("batch_id", postgresql.UUID(as_uuid=True)))
    op.add_column("messages", sa.Column("batch_index", sa.Integer()))
    op.add_column("messages", sa.Column("batch_address", sa.Text()))
    op.create_foreign_key(
        op.f("fk_messages_batch_id_batches"), "messages", "batches", ["batch_id"], ["id"]
    )
    op.create_index(
        "uq_messages_batch_index",
        "messages",
        ["batch_id", "batch_index"],
        unique=True,
        postgresql_where=sa.text("batch_id IS NOT NULL"),
    )
    op.create_index(
        "uq_messages_batch_address",
        "messages",
        ["batch_id", "batch_address"],
        unique=True,
        postgresql_where=sa.text("batch_address IS NOT NULL"),
    )
    op.drop_constraint(op.f("ck_messages_status"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_status"), "messages", NEW_STATUSES)
    op.execute(COUNT_TRIGGER)
    op.execute(
        "CREATE TRIGGER batch_counts AFTER UPDATE ON messages "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION batch_counts_follow_messages()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER batch_counts ON messages")
    op.execute("DROP FUNCTION batch_counts_follow_messages()")
    # A cancelled message was never sent: it reads failed without its batch.
    op.execute("UPDATE messages SET status = 'failed' WHERE status = 'cancelled'")
    op.drop_constraint(op.f("ck_messages_status"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_status"), "messages", OLD_STATUSES)
    op.drop_index("uq_messages_batch_address", table_name="messages")
    op.drop_index("uq_messages_batch_index", table_name="messages")
    op.drop_constraint(op.f("fk_messages_batch_id_batches"), "messages", type_="foreignkey")
    op.drop_column("messages", "batch_address")
    op.drop_column("messages", "batch_index")
    op.drop_column("messages", "batch_id")
    op.drop_table("batch_issues")
    op.drop_table("batch_inputs")
    op.drop_index("ix_batches_client_created", table_name="batches")
    op.drop_table("batches")
