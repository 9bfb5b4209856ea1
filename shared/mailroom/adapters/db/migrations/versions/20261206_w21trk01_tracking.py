"""tracking_links and tracking_hits: open and click tracking (issue 21)

Revision ID: w21trk01
Revises: w20rel01
Create Date: 2026-12-06 11:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "w21trk01"
down_revision: str | None = "w20rel01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "kind IN ('open', 'click', 'honeypot')"


def upgrade() -> None:
    op.create_table(
        "tracking_links",
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("link_index", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(KINDS, name=op.f("ck_tracking_links_kind")),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_tracking_links_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_tracking_links")),
    )
    op.create_index("ix_tracking_links_message_id", "tracking_links", ["message_id"])
    op.create_table(
        "tracking_hits",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("link_index", sa.Integer(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("user_agent", sa.String(length=512), server_default="", nullable=False),
        sa.Column("ip", sa.String(length=64), server_default="", nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column(
            "signals",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(KINDS, name=op.f("ck_tracking_hits_kind")),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_tracking_hits_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["token"],
            ["tracking_links.token"],
            name=op.f("fk_tracking_hits_token_tracking_links"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_hits")),
    )
    op.create_index("ix_tracking_hits_message_id", "tracking_hits", ["message_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_tracking_hits_message_id", table_name="tracking_hits")
    op.drop_table("tracking_hits")
    op.drop_index("ix_tracking_links_message_id", table_name="tracking_links")
    op.drop_table("tracking_links")
