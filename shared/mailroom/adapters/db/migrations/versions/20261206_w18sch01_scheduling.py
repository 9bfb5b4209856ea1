"""scheduling: scheduled and cancelled messages, schedules and their runs (issue 18)

Revision ID: w18sch01
Revises: w17bat01
Create Date: 2026-12-06 10:30:00

Messages gain ``scheduled_at`` (due time), ``enqueued_at`` (when the queue
was told), and the schedule and run that made them; two statuses join the
CHECK. Downgrade turns scheduled rows into queued ones (the reconciler then
sends them) and cancelled ones into failed ones with the reason, before the
old CHECK comes back.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "w18sch01"
down_revision: str | None = "w17bat01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# w17bat01 (bulk batches' cancel) added "cancelled" before this revision.
OLD_STATUSES = ("queued", "sending", "sent", "delivered", "bounced", "failed", "spam", "cancelled")
NEW_STATUSES = ("scheduled", *OLD_STATUSES)


def _status_check(statuses: Sequence[str]) -> str:
    return "status IN (" + ", ".join(f"'{status}'" for status in statuses) + ")"


def upgrade() -> None:
    op.add_column("messages", sa.Column("scheduled_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("enqueued_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("schedule_id", sa.UUID()))
    op.add_column("messages", sa.Column("schedule_run_id", sa.UUID()))
    op.drop_constraint(op.f("ck_messages_status"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_status"), "messages", _status_check(NEW_STATUSES))
    op.create_index(
        "ix_messages_scheduled",
        "messages",
        ["scheduled_at"],
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.create_index(
        "ix_messages_unreleased",
        "messages",
        ["scheduled_at"],
        postgresql_where=sa.text("status = 'scheduled' AND enqueued_at IS NULL"),
    )
    op.create_index("ix_messages_schedule_run", "messages", ["schedule_run_id"])

    op.create_table(
        "schedules",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("send", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("misfire_policy", sa.String(length=8), nullable=False),
        sa.Column("misfire_grace_seconds", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True)),
        sa.Column("ends_at", sa.DateTime(timezone=True)),
        sa.Column("next_run_at", sa.DateTime(timezone=True)),
        sa.Column("last_run_at", sa.DateTime(timezone=True)),
        sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False),
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
            "state IN ('active', 'paused', 'finished')", name=op.f("ck_schedules_state")
        ),
        sa.CheckConstraint(
            "misfire_policy IN ('send', 'skip')", name=op.f("ck_schedules_misfire_policy")
        ),
        sa.CheckConstraint(
            "misfire_grace_seconds >= 0", name=op.f("ck_schedules_misfire_grace_seconds")
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_schedules_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index("ix_schedules_client_created", "schedules", ["client_id", "created_at"])
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_run_at"],
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("schedule_id", sa.UUID(), nullable=False),
        sa.Column("fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column(
            "message_ids",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "detail",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('started', 'sent', 'failed', 'skipped')",
            name=op.f("ck_schedule_runs_status"),
        ),
        sa.CheckConstraint(
            "trigger IN ('cron', 'catch_up', 'run_now')", name=op.f("ck_schedule_runs_trigger")
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_runs_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
    )
    op.create_index(
        "ix_schedule_runs_schedule_started", "schedule_runs", ["schedule_id", "started_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_schedule_runs_schedule_started", table_name="schedule_runs")
    op.drop_table("schedule_runs")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_index("ix_schedules_client_created", table_name="schedules")
    op.drop_table("schedules")
    op.execute("UPDATE messages SET status = 'queued' WHERE status = 'scheduled'")
    op.drop_index("ix_messages_schedule_run", table_name="messages")
    op.drop_index("ix_messages_unreleased", table_name="messages")
    op.drop_index("ix_messages_scheduled", table_name="messages")
    op.drop_constraint(op.f("ck_messages_status"), "messages", type_="check")
    op.create_check_constraint(op.f("ck_messages_status"), "messages", _status_check(OLD_STATUSES))
    op.drop_column("messages", "schedule_run_id")
    op.drop_column("messages", "schedule_id")
    op.drop_column("messages", "enqueued_at")
    op.drop_column("messages", "scheduled_at")
