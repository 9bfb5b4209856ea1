"""inline_contents: the inline content of sends, once per content hash (issue 17)

Revision ID: w17inl01
Revises: w16bnc01
Create Date: 2026-12-06 10:40:00

Messages name their content ``inline:<hash>`` in ``template_name``, so the
messages table is unchanged.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w17inl01"
down_revision: str | None = "w16bnc01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inline_contents",
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("content_hash", name=op.f("pk_inline_contents")),
    )


def downgrade() -> None:
    op.drop_table("inline_contents")
