"""queues.release_requested_at and a partial index on held rows: paged release (issue 20)

Revision ID: w20c01
Revises: w21aan01
Create Date: 2026-12-06 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w20c01"
down_revision: str | None = "w21aan01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Set by resume, drain and delete-with-drain while held mail is left to
    # release; the scheduler's pass releases it page by page and clears it.
    op.add_column(
        "queues", sa.Column("release_requested_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_queues_release_requested",
        "queues",
        ["release_requested_at"],
        postgresql_where=sa.text("release_requested_at IS NOT NULL"),
    )
    # A default queue's held rows (queue_id NULL) in order, without walking
    # the client's sent mail.
    op.create_index(
        "ix_messages_held_client",
        "messages",
        ["client_id", "created_at"],
        postgresql_where=sa.text("status = 'held'"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_held_client", table_name="messages")
    op.drop_index("ix_queues_release_requested", table_name="queues")
    op.drop_column("queues", "release_requested_at")
