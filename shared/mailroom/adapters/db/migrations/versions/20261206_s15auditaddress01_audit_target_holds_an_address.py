"""admin_audit_log.target_id: room for a whole email address

Revision ID: s15auditaddress01
Revises: h15templates01
Create Date: 2026-12-06 09:00:00

A suppression's audit row is targeted at its address, and an address may be
up to 254 characters (longer than the 128 the column held): an add or removal
of such an address failed with a 500 instead of being recorded. Clients can
now add entries themselves (/v1/suppressions), so the column takes 320, the
API's address limit. Downgrade cuts longer targets to 128 characters (the
append-only trigger does not fire on ALTER TABLE's rewrite).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "s15auditaddress01"
down_revision: str | None = "h15templates01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "admin_audit_log",
        "target_id",
        type_=sa.String(320),
        existing_type=sa.String(128),
        existing_nullable=False,
    )


def downgrade() -> None:
    op.alter_column(
        "admin_audit_log",
        "target_id",
        type_=sa.String(128),
        existing_type=sa.String(320),
        existing_nullable=False,
        postgresql_using="left(target_id, 128)",
    )
