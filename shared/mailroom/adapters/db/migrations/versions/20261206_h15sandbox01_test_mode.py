"""clients.sandbox_mode, messages.is_test, suppressions.is_test: test mode (issue 15, item 2)

Revision ID: h15sandbox01
Revises: g9idnaddresses01
Create Date: 2026-12-06 09:00:00

Test traffic is flagged on its message row (recipient rows and events belong
to the message). Suppressions created by test traffic are flagged too and get
a scope of their own in the unique key, so a test entry never replaces, or is
replaced by, a live one for the same client and address.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "h15sandbox01"
down_revision: str | None = "g9idnaddresses01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "clients",
        sa.Column("sandbox_mode", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "messages",
        sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "suppressions",
        sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.drop_index("uq_suppressions_client_address", table_name="suppressions")
    op.create_index(
        "uq_suppressions_client_address",
        "suppressions",
        ["client_id", "address", "is_test"],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )


def downgrade() -> None:
    # Test entries go first: without the flag they would collide with live ones.
    op.execute("DELETE FROM suppressions WHERE is_test")
    op.drop_index("uq_suppressions_client_address", table_name="suppressions")
    op.create_index(
        "uq_suppressions_client_address",
        "suppressions",
        ["client_id", "address"],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.drop_column("suppressions", "is_test")
    op.drop_column("messages", "is_test")
    op.drop_column("clients", "sandbox_mode")
