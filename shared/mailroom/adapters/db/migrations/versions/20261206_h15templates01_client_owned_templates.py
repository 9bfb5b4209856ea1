"""template_versions.client_id: uploaded templates belong to a client, or are shared

Revision ID: h15templates01
Revises: h15sandbox01
Create Date: 2026-12-06 12:00:00

Issue 15, item 3. An uploaded template is owned by the client that uploaded
it (``client_id``), or shared with every client (NULL: what an operator
uploads without naming a client). Every template uploaded before this
revision becomes shared, so every send that worked still works.

A nullable column cannot be part of a primary key, so the table gets a
surrogate ``id``; one (name, owner, version) is kept unique with NULLS NOT
DISTINCT (PostgreSQL 15+), as suppressions do.

``messages.template_shared`` pins whose template a message renders: set at
acceptance with ``template_version`` (true: the shared one, false: the
client's own), NULL for file templates and rows from before.

Downgrade deletes client-owned templates: the old schema has no place for a
second template of one name and version.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "h15templates01"
down_revision: str | None = "h15sandbox01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "template_versions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
    )
    op.add_column("template_versions", sa.Column("client_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_template_versions_client_id_clients"),
        "template_versions",
        "clients",
        ["client_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.drop_constraint("pk_template_versions", "template_versions", type_="primary")
    op.create_primary_key("pk_template_versions", "template_versions", ["id"])
    op.create_index(
        "uq_template_versions_name_owner_version",
        "template_versions",
        ["name", "client_id", "version"],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.add_column("messages", sa.Column("template_shared", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "template_shared")
    op.execute("DELETE FROM template_versions WHERE client_id IS NOT NULL")
    op.drop_index("uq_template_versions_name_owner_version", table_name="template_versions")
    op.drop_constraint("pk_template_versions", "template_versions", type_="primary")
    op.create_primary_key("pk_template_versions", "template_versions", ["name", "version"])
    op.drop_constraint(
        op.f("fk_template_versions_client_id_clients"), "template_versions", type_="foreignkey"
    )
    op.drop_column("template_versions", "client_id")
    op.drop_column("template_versions", "id")
