"""queues.tracking and template_versions.tracking: tracking defaults (issue 21)

Revision ID: w21trd01
Revises: w17c01
Create Date: 2026-12-06 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "w21trd01"
down_revision: str | None = "w17c01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("queues", sa.Column("tracking", postgresql.JSONB(), nullable=True))
    op.add_column("template_versions", sa.Column("tracking", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("template_versions", "tracking")
    op.drop_column("queues", "tracking")
