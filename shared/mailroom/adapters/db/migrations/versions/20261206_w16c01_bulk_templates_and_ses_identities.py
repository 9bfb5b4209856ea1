"""template_versions.bulk and sending_domains.ses_identity_created (issue 16)

An uploaded template version may be marked bulk: sends using it carry
one-click unsubscribe. A sending domain remembers whether Mailroom created its
SES identity, so that deleting the domain deletes only an identity it made.

Revision ID: w16c01
Revises: w18cbat01
Create Date: 2026-12-06 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w16c01"
down_revision: str | None = "w18cbat01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "template_versions",
        sa.Column("bulk", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    # Domains registered before this revision: whether their identity was
    # created or adopted is not known, so they are left alone on delete.
    op.add_column(
        "sending_domains",
        sa.Column(
            "ses_identity_created", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("sending_domains", "ses_identity_created")
    op.drop_column("template_versions", "bulk")
