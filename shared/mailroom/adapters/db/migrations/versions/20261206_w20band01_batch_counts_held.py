"""Batch counters count held messages as unsent: batches through paused queues (issue 20)

A batch's ``queued_count`` (the ``batch_counts`` trigger, w17bat01) counted
only ``queued`` and ``sending`` rows. A batch message held by its paused
queue (the claim gate's hold, or a batch planned into a paused queue) left
the count, so the batch could read ``finished`` while its mail waited for
the resume, and a message planned ``held`` would be counted twice when
released. ``held`` is unsent mail: it now counts with ``queued``.

Revision ID: w20band01
Revises: w21thd01
Create Date: 2026-12-06 16:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "w20band01"
down_revision: str | None = "w21thd01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNT_FUNCTION = """
CREATE OR REPLACE FUNCTION batch_counts_follow_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH delta AS (
        SELECT batch_id, status, sum(n) AS n
        FROM (
            SELECT batch_id, status, 1 AS n FROM new_rows WHERE batch_id IS NOT NULL
            UNION ALL
            SELECT batch_id, status, -1 AS n FROM old_rows WHERE batch_id IS NOT NULL
        ) AS changes
        GROUP BY batch_id, status
        HAVING sum(n) <> 0
    ), per_batch AS (
        SELECT batch_id,
               coalesce(sum(n) FILTER (WHERE status IN ({unsent})), 0) AS queued,
               coalesce(sum(n) FILTER (WHERE status = 'sent'), 0) AS sent,
               coalesce(sum(n) FILTER (WHERE status = 'delivered'), 0) AS delivered,
               coalesce(sum(n) FILTER (WHERE status = 'bounced'), 0) AS bounced,
               coalesce(sum(n) FILTER (WHERE status = 'failed'), 0) AS failed,
               coalesce(sum(n) FILTER (WHERE status = 'spam'), 0) AS complained,
               coalesce(sum(n) FILTER (WHERE status = 'cancelled'), 0) AS cancelled
        FROM delta
        GROUP BY batch_id
    )
    UPDATE batches AS b
    SET queued_count = b.queued_count + p.queued,
        sent_count = b.sent_count + p.sent,
        delivered_count = b.delivered_count + p.delivered,
        bounced_count = b.bounced_count + p.bounced,
        failed_count = b.failed_count + p.failed,
        complained_count = b.complained_count + p.complained,
        cancelled_count = b.cancelled_count + p.cancelled,
        -- Handed to a provider: counted once, the first time a message leaves
        -- queued for sent (later feedback moves it on, never back).
        handed_over = b.handed_over + (
            SELECT count(*) FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
            WHERE n.batch_id = p.batch_id
              AND o.status IN ('queued', 'sending')
              AND n.status IN ('sent', 'delivered', 'bounced', 'spam')),
        updated_at = now(),
        status = CASE
            WHEN b.status = 'sending' AND b.plan_done AND b.queued_count + p.queued = 0
                THEN 'finished'
            ELSE b.status END,
        finished_at = CASE
            WHEN b.status = 'sending' AND b.plan_done AND b.queued_count + p.queued = 0
                THEN now()
            ELSE b.finished_at END
    FROM per_batch AS p
    WHERE b.id = p.batch_id;
    RETURN NULL;
END;
$$;
"""

UNSENT = "'queued', 'sending', 'held'"
UNSENT_BEFORE = "'queued', 'sending'"


def upgrade() -> None:
    op.execute(COUNT_FUNCTION.format(unsent=UNSENT))
    # Batches whose held messages had left the count get them back.
    op.execute(
        """
        UPDATE batches AS b
        SET queued_count = (SELECT count(*) FROM messages AS m
                            WHERE m.batch_id = b.id AND m.status IN ('queued', 'sending', 'held'))
        WHERE EXISTS (SELECT 1 FROM messages AS m WHERE m.batch_id = b.id AND m.status = 'held')
        """
    )


def downgrade() -> None:
    op.execute(COUNT_FUNCTION.format(unsent=UNSENT_BEFORE))
