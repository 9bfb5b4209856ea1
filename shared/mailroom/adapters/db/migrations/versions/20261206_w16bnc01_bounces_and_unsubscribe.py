"""inbound_mail, soft_bounces, messages.options, suppression reason soft_bounce

Revision ID: w16bnc01
Revises: h15apikeys01
Create Date: 2026-12-06 11:00:00

Issue 16 items 3-5: inbound bounce mail kept for review and applied once,
soft bounces counted per address, the caller's send options (headers, tags,
bulk, campaign, List-Unsubscribe URL) stored with the message.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "w16bnc01"
down_revision: str | None = "h15apikeys01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OUTCOMES = "'applied', 'unmatched', 'bad_signature', 'auto_reply', 'unrecognised', 'unsubscribed'"


def upgrade() -> None:
    op.create_table(
        "inbound_mail",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("envelope_recipients", postgresql.JSONB(), nullable=False),
        sa.Column("sender", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("report_format", sa.String(length=24), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reports", postgresql.JSONB(), nullable=False),
        sa.Column("raw_sha256", sa.String(length=64), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("raw_truncated", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.CheckConstraint(f"outcome IN ({_OUTCOMES})", name=op.f("ck_inbound_mail_outcome")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_mail")),
    )
    op.create_index("uq_inbound_mail_raw_sha256", "inbound_mail", ["raw_sha256"], unique=True)
    op.create_index("ix_inbound_mail_outcome_received", "inbound_mail", ["outcome", "received_at"])
    op.create_index(op.f("ix_inbound_mail_message_id"), "inbound_mail", ["message_id"])
    op.create_table(
        "soft_bounces",
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column(
            "first_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "last_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_soft_bounces")),
    )
    op.add_column(
        "messages",
        sa.Column(
            "options", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
    )
    op.drop_constraint(op.f("ck_suppressions_reason"), "suppressions", type_="check")
    op.create_check_constraint(
        op.f("ck_suppressions_reason"),
        "suppressions",
        "reason IN ('hard_bounce', 'soft_bounce', 'complaint', 'unsubscribe', 'manual')",
    )


def downgrade() -> None:
    op.execute("DELETE FROM suppressions WHERE reason = 'soft_bounce'")
    op.drop_constraint(op.f("ck_suppressions_reason"), "suppressions", type_="check")
    op.create_check_constraint(
        op.f("ck_suppressions_reason"),
        "suppressions",
        "reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')",
    )
    op.drop_column("messages", "options")
    op.drop_table("soft_bounces")
    op.drop_index(op.f("ix_inbound_mail_message_id"), table_name="inbound_mail")
    op.drop_index("ix_inbound_mail_outcome_received", table_name="inbound_mail")
    op.drop_index("uq_inbound_mail_raw_sha256", table_name="inbound_mail")
    op.drop_table("inbound_mail")
