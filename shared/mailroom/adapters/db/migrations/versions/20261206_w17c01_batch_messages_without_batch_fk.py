"""messages.batch_id without its foreign key: the planner's chunks (issue 17, performance)

Revision ID: w17c01
Revises: w20c01
Create Date: 2026-12-06 13:35:00

Every message row a bulk batch's planner writes ran a foreign-key check
against ``batches`` (one SPI lookup per row, about a tenth of a chunk's
statement time in EXPLAIN ANALYZE). The check can never fail there: the
planner writes a chunk in the transaction that holds the batch row
``FOR UPDATE`` and takes ``batch_id`` from that row, and no code path
deletes a batch (a batch ends cancelled, finished or failed, and its row
stays as the record of its progress). ``batch_id`` stays indexed
(``uq_messages_batch_index``) for the progress and recipients reads.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "w17c01"
down_revision: str | None = "w20c01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("fk_messages_batch_id_batches"), "messages", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        op.f("fk_messages_batch_id_batches"), "messages", "batches", ["batch_id"], ["id"]
    )
