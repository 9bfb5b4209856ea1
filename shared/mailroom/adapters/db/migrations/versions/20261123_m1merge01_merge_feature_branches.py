"""merge the template, clients and feedback schema branches

Revision ID: m1merge01
Revises: b3templates01, c6clients01, e5feedback01
Create Date: 2026-11-23 06:40:00
"""

from collections.abc import Sequence

revision: str = "m1merge01"
down_revision: str | Sequence[str] | None = ("b3templates01", "c6clients01", "e5feedback01")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
