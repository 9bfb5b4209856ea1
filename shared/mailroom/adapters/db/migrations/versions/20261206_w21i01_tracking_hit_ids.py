"""tracking_hits.hit_id: a queued hit is written once however often it is delivered (issue 21)

Revision ID: w21i01
Revises: w16c01
Create Date: 2026-12-06 13:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w21i01"
down_revision: str | None = "w16c01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The id the tracking function gives a hit when it queues it; the
    # consumer's insert skips one it wrote before (a redelivered batch, two
    # consumers on one entry). Hits written before the queue have none.
    op.add_column("tracking_hits", sa.Column("hit_id", sa.String(length=32), nullable=True))
    op.create_index(
        "uq_tracking_hits_hit_id",
        "tracking_hits",
        ["hit_id"],
        unique=True,
        postgresql_where=sa.text("hit_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_tracking_hits_hit_id", table_name="tracking_hits")
    op.drop_column("tracking_hits", "hit_id")
