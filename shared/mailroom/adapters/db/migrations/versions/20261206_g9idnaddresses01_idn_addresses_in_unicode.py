"""suppressions, message_recipients: internationalised domains in one form (Unicode)

Revision ID: g9idnaddresses01
Revises: g8clientnames01
Create Date: 2026-12-06 08:10:00

Addresses are keyed by domain.feedback.bare_address, which now writes an
internationalised domain in its Unicode form whichever way it came in. Rows
written before with a punycode domain (a provider's bounce, an admin entry
typed as ``xn--``) are rewritten to that form so that screening, listing and
removal find them; a punycode entry whose Unicode twin already exists in the
same scope is dropped (the twin protects the address). Nothing to undo on
downgrade: the Unicode form was always a valid key.
"""

from collections.abc import Sequence

import idna
import sqlalchemy as sa
from alembic import op

revision: str = "g9idnaddresses01"
down_revision: str | None = "g8clientnames01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _unicode(address: str) -> str:
    # Frozen copy of bare_address's IDN step at this revision.
    local, at, domain = address.rpartition("@")
    try:
        return f"{local}{at}{idna.decode(idna.encode(domain, uts46=True))}"
    except (idna.IDNAError, UnicodeError):
        return address


def upgrade() -> None:
    connection = op.get_bind()
    suppressions = connection.execute(
        sa.text("SELECT id, client_id, address FROM suppressions WHERE address LIKE '%xn--%'")
    ).all()
    for row_id, client_id, address in suppressions:
        canonical = _unicode(address)
        if canonical == address:
            continue
        twin = connection.execute(
            sa.text(
                "SELECT 1 FROM suppressions"
                " WHERE address = :address AND client_id IS NOT DISTINCT FROM :client_id"
            ),
            {"address": canonical, "client_id": client_id},
        ).first()
        if twin is None:
            connection.execute(
                sa.text("UPDATE suppressions SET address = :address WHERE id = :id"),
                {"address": canonical, "id": row_id},
            )
        else:
            connection.execute(sa.text("DELETE FROM suppressions WHERE id = :id"), {"id": row_id})
    recipients = connection.execute(
        sa.text("SELECT message_id, address FROM message_recipients WHERE address LIKE '%xn--%'")
    ).all()
    for message_id, address in recipients:
        canonical = _unicode(address)
        if canonical != address:
            # A message listing both spellings keeps the row it has (ON CONFLICT-free
            # UPDATE would fail on the primary key).
            connection.execute(
                sa.text(
                    "UPDATE message_recipients SET address = :canonical"
                    " WHERE message_id = :message_id AND address = :address"
                    " AND NOT EXISTS (SELECT 1 FROM message_recipients"
                    "   WHERE message_id = :message_id AND address = :canonical)"
                ),
                {"canonical": canonical, "message_id": message_id, "address": address},
            )


def downgrade() -> None:
    pass
