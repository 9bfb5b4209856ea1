"""webhook_endpoints.opens: an endpoint may take first opens only (issue 21)

Revision ID: w21opn01
Revises: w20que01
Create Date: 2026-12-06 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w21opn01"
down_revision: str | None = "w20que01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "webhook_endpoints",
        sa.Column("opens", sa.String(length=8), server_default="all", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_webhook_endpoints_opens"), "webhook_endpoints", "opens IN ('all', 'first')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_webhook_endpoints_opens"), "webhook_endpoints", type_="check")
    op.drop_column("webhook_endpoints", "opens")
