"""clients: names are unique, compared case-insensitively

Revision ID: g8clientnames01
Revises: f7reliability01
Create Date: 2026-12-06 08:00:00

A database from before this revision may hold clients that share a name: the
oldest keeps it, each later one gets its id's first eight characters appended
(``acme (1f0c2a9e)``), so the index can be built and no client is lost. The
downgrade drops the index and leaves the names as they are.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g8clientnames01"
down_revision: str | None = "f7reliability01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE clients AS c
        SET name = left(c.name, 188) || ' (' || left(c.id::text, 8) || ')'
        FROM (
            SELECT id, row_number() OVER (
                PARTITION BY lower(name) ORDER BY created_at, id
            ) AS n
            FROM clients
        ) AS ranked
        WHERE ranked.id = c.id AND ranked.n > 1
        """
    )
    op.create_index("uq_clients_lower_name", "clients", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_clients_lower_name", table_name="clients")
