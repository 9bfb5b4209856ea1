"""sending_domains.tracking_host: a client's own tracking host (issue 21)

Revision ID: w21thd01
Revises: w21trd01
Create Date: 2026-12-06 15:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w21thd01"
down_revision: str | None = "w21trd01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sending_domains", sa.Column("tracking_host", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("sending_domains", "tracking_host")
