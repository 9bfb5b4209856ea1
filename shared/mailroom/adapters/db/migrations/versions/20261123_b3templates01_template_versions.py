"""template_versions: uploaded templates; messages.template_version: a pinned version

Revision ID: b3templates01
Revises: a2provorder01
Create Date: 2026-11-23 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b3templates01"
down_revision: str | None = "a2provorder01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "template_versions",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("props_schema", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("sample_props", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_template_versions")),
    )
    op.add_column("messages", sa.Column("template_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "template_version")
    op.drop_table("template_versions")
