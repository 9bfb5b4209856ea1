"""analytics rollups, the roll-up queue and its trigger, reputation states (issue 21 items 4-5)

Revision ID: w21aan01
Revises: w21i01
Create Date: 2026-12-06 13:40:00

A statement-level trigger on ``message_events`` queues the id of every event
the analytics count into ``analytics_pending``, in the inserting transaction,
whatever code path inserted it (the send API, the worker, the feedback and
tracking consumers, batched or not). The roll-up (services/analytics.py)
deletes queued ids and adds their counts in one transaction: a queue rather
than an id cursor, because ids are handed out before commit and a cursor
would skip an event whose transaction commits after a later id's; a delete
claimed with SKIP LOCKED lets roll-ups run side by side and count each event
once. The trigger only appends (no hot counter row), so concurrent senders
never wait on each other's rollup rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w21aan01"
down_revision: str | None = "w21i01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTED_TYPES = (
    "'sent', 'delivered', 'bounced', 'complained', 'opened', 'clicked', 'unsubscribed', "
    "'suppressed', 'recipients_suppressed', 'failed'"
)
COUNTERS = (
    "sent",
    "delivered",
    "hard_bounces",
    "soft_bounces",
    "complaints",
    "opens",
    "machine_opens",
    "unique_opens",
    "clicks",
    "machine_clicks",
    "unique_clicks",
    "unsubscribes",
    "suppressed",
    "failed",
)

# The list is a constant of this file, not input.
PENDING_FUNCTION = f"""
CREATE FUNCTION message_events_to_analytics() RETURNS trigger AS $$
BEGIN
    INSERT INTO analytics_pending (event_id)
    SELECT e.id FROM inserted e WHERE e.type IN ({COUNTED_TYPES});
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""  # noqa: S608
PENDING_TRIGGER = """
CREATE TRIGGER message_events_analytics
AFTER INSERT ON message_events
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION message_events_to_analytics()
"""


def _counters() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column(name, sa.BigInteger(), server_default="0", nullable=False) for name in COUNTERS
    ]


def _client_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["client_id"],
        ["clients.id"],
        name=op.f(f"fk_{table}_client_id_clients"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.add_column("clients", sa.Column("sending_paused_at", sa.DateTime(timezone=True)))
    op.add_column("clients", sa.Column("sending_paused_reason", sa.Text()))
    op.create_table(
        "analytics_pending",
        sa.Column("event_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["message_events.id"],
            name=op.f("fk_analytics_pending_event_id_message_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_analytics_pending")),
    )
    op.create_table(
        "analytics_firsts",
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.CheckConstraint("kind IN ('open', 'click')", name=op.f("ck_analytics_firsts_kind")),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_analytics_firsts_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "kind", name=op.f("pk_analytics_firsts")),
    )
    op.create_table(
        "analytics_hourly",
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("is_test", sa.Boolean(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=128), nullable=False),
        sa.Column("sending_domain", sa.String(length=255), nullable=False),
        sa.Column("recipient_group", sa.String(length=16), nullable=False),
        *_counters(),
        _client_fk("analytics_hourly"),
        sa.PrimaryKeyConstraint(
            "client_id",
            "is_test",
            "hour",
            "queue",
            "template",
            "sending_domain",
            "recipient_group",
            name=op.f("pk_analytics_hourly"),
        ),
    )
    for dimension in ("queue", "template", "sending_domain", "recipient_group"):
        op.create_index(
            f"ix_analytics_hourly_{dimension}",
            "analytics_hourly",
            ["client_id", "is_test", dimension, "hour"],
        )
    op.create_table(
        "analytics_hourly_by",
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("is_test", sa.Boolean(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        *_counters(),
        sa.CheckConstraint(
            "dimension IN ('all', 'queue', 'template', 'sending_domain', 'recipient_group', 'tag')",
            name=op.f("ck_analytics_hourly_by_dimension"),
        ),
        _client_fk("analytics_hourly_by"),
        sa.PrimaryKeyConstraint(
            "client_id",
            "dimension",
            "value",
            "is_test",
            "hour",
            name=op.f("pk_analytics_hourly_by"),
        ),
    )
    op.create_index(
        "ix_analytics_hourly_by_dimension",
        "analytics_hourly_by",
        ["dimension", "value", "is_test", "hour"],
    )
    op.create_table(
        "reputation_states",
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("sending_domain", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("sent", sa.BigInteger(), nullable=False),
        sa.Column("hard_bounces", sa.BigInteger(), nullable=False),
        sa.Column("complaints", sa.BigInteger(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('ok', 'warn', 'throttle', 'pause')", name=op.f("ck_reputation_states_state")
        ),
        _client_fk("reputation_states"),
        sa.PrimaryKeyConstraint("client_id", "sending_domain", name=op.f("pk_reputation_states")),
    )
    op.execute(PENDING_FUNCTION)
    op.execute(PENDING_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS message_events_analytics ON message_events")
    op.execute("DROP FUNCTION IF EXISTS message_events_to_analytics()")
    op.drop_table("reputation_states")
    op.drop_index("ix_analytics_hourly_by_dimension", table_name="analytics_hourly_by")
    op.drop_table("analytics_hourly_by")
    for dimension in ("queue", "template", "sending_domain", "recipient_group"):
        op.drop_index(f"ix_analytics_hourly_{dimension}", table_name="analytics_hourly")
    op.drop_table("analytics_hourly")
    op.drop_table("analytics_firsts")
    op.drop_table("analytics_pending")
    op.drop_column("clients", "sending_paused_reason")
    op.drop_column("clients", "sending_paused_at")
