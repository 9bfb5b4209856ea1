"""smtp_configs: a client's own SMTP relays, the password sealed (issue 20, item 4)

Revision ID: w20rel01
Revises: w18sch01
Create Date: 2026-12-06 11:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "w20rel01"
down_revision: str | None = "w18sch01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "smtp_configs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("security", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=True),
        sa.Column("sealed_password", sa.Text(), nullable=True),
        sa.Column("pool_size", sa.Integer(), server_default="1", nullable=False),
        sa.Column("timeout_seconds", sa.Float(), server_default="10", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("is_default", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "throttle_per_minute",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "security IN ('none', 'starttls', 'tls')", name=op.f("ck_smtp_configs_security")
        ),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name=op.f("ck_smtp_configs_port")),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_smtp_configs_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smtp_configs")),
        sa.UniqueConstraint("client_id", "name", name=op.f("uq_smtp_configs_client_id")),
    )
    # At most one default relay per client.
    op.create_index(
        "ix_smtp_configs_one_default",
        "smtp_configs",
        ["client_id"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )


def downgrade() -> None:
    op.drop_index("ix_smtp_configs_one_default", table_name="smtp_configs")
    op.drop_table("smtp_configs")
