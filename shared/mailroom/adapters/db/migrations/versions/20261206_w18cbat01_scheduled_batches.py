"""scheduled bulk batches, and schedules whose runs create a batch (issue 18, items 1 and 4)

Revision ID: w18cbat01
Revises: w21opn01
Create Date: 2026-12-06 13:30:00

A batch with ``scheduled_at`` waits as one ``scheduled`` row: the scheduler
hands it to the planner at its time (``released_at`` says it did), and the
planner writes its messages then. A schedule holds either a ``send`` or a
``batch`` payload (exactly one), and each run that created a batch names it.

Downgrade: a batch still waiting could never start under the old code, so
it reads ``failed`` with the reason; schedules with a batch payload cannot be
expressed without the column and are deleted (their runs with them; the
batches they created stay).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "w18cbat01"
down_revision: str | None = "w21opn01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_BATCH_STATUSES = (
    "awaiting_upload",
    "accepted",
    "planning",
    "sending",
    "finished",
    "cancelled",
    "failed",
)
NEW_BATCH_STATUSES = ("scheduled", *OLD_BATCH_STATUSES)


def _status_check(statuses: Sequence[str]) -> str:
    return "status IN (" + ", ".join(f"'{status}'" for status in statuses) + ")"


def upgrade() -> None:
    op.add_column("batches", sa.Column("scheduled_at", sa.DateTime(timezone=True)))
    op.add_column("batches", sa.Column("released_at", sa.DateTime(timezone=True)))
    op.add_column("batches", sa.Column("schedule_id", sa.UUID()))
    op.add_column("batches", sa.Column("schedule_run_id", sa.UUID()))
    op.drop_constraint(op.f("ck_batches_status"), "batches", type_="check")
    op.create_check_constraint(
        op.f("ck_batches_status"), "batches", _status_check(NEW_BATCH_STATUSES)
    )
    # The scheduler's scan: one row per waiting batch, however many recipients.
    op.create_index(
        "ix_batches_scheduled",
        "batches",
        ["scheduled_at"],
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.alter_column("schedules", "send", nullable=True)
    op.add_column("schedules", sa.Column("batch", postgresql.JSONB(astext_type=sa.Text())))
    op.create_check_constraint(
        op.f("ck_schedules_one_payload"), "schedules", "num_nonnulls(send, batch) = 1"
    )
    op.add_column("schedule_runs", sa.Column("batch_id", sa.UUID()))


def downgrade() -> None:
    op.drop_column("schedule_runs", "batch_id")
    op.execute("DELETE FROM schedules WHERE batch IS NOT NULL")
    op.drop_constraint(op.f("ck_schedules_one_payload"), "schedules", type_="check")
    op.drop_column("schedules", "batch")
    op.alter_column("schedules", "send", nullable=False)
    op.execute(
        "UPDATE batches SET status = 'failed', finished_at = now(), "
        "error = 'scheduled: not started before a downgrade; send it again' "
        "WHERE status = 'scheduled'"
    )
    op.drop_index("ix_batches_scheduled", table_name="batches")
    op.drop_constraint(op.f("ck_batches_status"), "batches", type_="check")
    op.create_check_constraint(
        op.f("ck_batches_status"), "batches", _status_check(OLD_BATCH_STATUSES)
    )
    op.drop_column("batches", "schedule_run_id")
    op.drop_column("batches", "schedule_id")
    op.drop_column("batches", "released_at")
    op.drop_column("batches", "scheduled_at")
