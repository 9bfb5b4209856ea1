"""Cheaper message rows for the planner: two partial indexes, one foreign key less (issue 17)

Revision ID: w17p01
Revises: w20band01
Create Date: 2026-12-06 16:30:00

A bulk batch's planner writes a message row and a recipient row per
recipient; PostgreSQL's share of that was about 34 µs per recipient, the
larger half of the planner's cost (bench/batches.py). Per row:

- ``ix_messages_provider_msg`` and ``ix_messages_schedule_run`` took an
  entry for every row, though both columns are NULL until the message is
  sent (provider id) or unless a schedule made it. Every lookup through
  them names a value (``provider_msg_id = ANY(...)``, which PostgreSQL
  proves NOT NULL, generic plans included), so they become partial indexes
  over the rows that have one.
- ``message_recipients.message_id`` ran a foreign-key check (one lookup
  and a KEY SHARE lock on the message row) for every recipient row. The
  check cannot fail: recipient rows are written in the same statement as
  their message (accepted_insert, the planner's chunk) or for a message
  the statement has just found (provider feedback), and no code path
  deletes a message. The primary key (message_id, address) still serves
  every read by message.

Measured on fresh bench databases (docs/benchmarks.md, issue 17).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w17p01"
down_revision: str | None = "w20band01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(
        op.f("fk_message_recipients_message_id_messages"), "message_recipients", type_="foreignkey"
    )
    op.drop_index("ix_messages_provider_msg", table_name="messages")
    op.create_index(
        "ix_messages_provider_msg",
        "messages",
        ["provider", "provider_msg_id"],
        postgresql_where=sa.text("provider_msg_id IS NOT NULL"),
    )
    op.drop_index("ix_messages_schedule_run", table_name="messages")
    op.create_index(
        "ix_messages_schedule_run",
        "messages",
        ["schedule_run_id"],
        postgresql_where=sa.text("schedule_run_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_schedule_run", table_name="messages")
    op.create_index("ix_messages_schedule_run", "messages", ["schedule_run_id"])
    op.drop_index("ix_messages_provider_msg", table_name="messages")
    op.create_index("ix_messages_provider_msg", "messages", ["provider", "provider_msg_id"])
    op.create_foreign_key(
        op.f("fk_message_recipients_message_id_messages"),
        "message_recipients",
        "messages",
        ["message_id"],
        ["id"],
    )
