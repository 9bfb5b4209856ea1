"""api_keys: many scoped keys per client; clients.daily_limit

Revision ID: h15apikeys01
Revises: s15auditaddress01
Create Date: 2026-12-06 09:00:00

Each client's key pair becomes one key with scope ``admin`` and mode from
its prefix, same id and same argon2id hash, so every existing secret (and a
secret still in its rotation grace) keeps working. The secret columns leave
``clients``; downgrade puts each client's first key back there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "h15apikeys01"
down_revision: str | None = "s15auditaddress01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("previous_secret_hash", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scopes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "ip_allowlist",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
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
        sa.CheckConstraint("mode IN ('live', 'test')", name=op.f("ck_api_keys_mode")),
        sa.CheckConstraint(
            "rate_limit IS NULL OR rate_limit >= 1", name=op.f("ck_api_keys_rate_limit")
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_api_keys_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_index("ix_api_keys_client_id", "api_keys", ["client_id", "created_at"])
    op.execute(
        """
        INSERT INTO api_keys (id, client_id, name, secret_hash, previous_secret_hash,
                              previous_secret_expires_at, scopes, mode, last_used_at,
                              created_at, updated_at)
        SELECT api_key_prefix, id, 'default', api_secret_hash, previous_secret_hash,
               previous_secret_expires_at, '["admin"]'::jsonb,
               CASE WHEN api_key_prefix LIKE 'mr\\_test\\_%' THEN 'test' ELSE 'live' END,
               last_used_at, created_at, updated_at
        FROM clients
        """
    )
    op.drop_column("clients", "api_secret_hash")
    op.drop_column("clients", "previous_secret_hash")
    op.drop_column("clients", "previous_secret_expires_at")
    op.add_column("clients", sa.Column("daily_limit", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("clients", "daily_limit")
    op.add_column("clients", sa.Column("api_secret_hash", sa.Text(), nullable=True))
    op.add_column("clients", sa.Column("previous_secret_hash", sa.Text(), nullable=True))
    op.add_column(
        "clients",
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    # The client's own key id is kept in clients.api_key_prefix; other keys are lost.
    op.execute(
        """
        UPDATE clients AS c
        SET api_secret_hash = k.secret_hash,
            previous_secret_hash = k.previous_secret_hash,
            previous_secret_expires_at = k.previous_secret_expires_at
        FROM api_keys AS k
        WHERE k.id = c.api_key_prefix
        """
    )
    # A client whose first key is gone cannot log in with it any more: an unusable hash.
    op.execute("UPDATE clients SET api_secret_hash = '!' WHERE api_secret_hash IS NULL")
    op.alter_column("clients", "api_secret_hash", nullable=False)
    op.drop_index("ix_api_keys_client_id", table_name="api_keys")
    op.drop_table("api_keys")
