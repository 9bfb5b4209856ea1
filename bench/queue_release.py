"""Resuming a paused queue that holds 100,000 messages (issue 20).

Writes N ``held`` rows of one paused queue straight to PostgreSQL, then
resumes it through services/queues.py as the API does (the request releases
the oldest page) and runs the scheduler function's release step
(``release_requested``) until nothing is held, and prints the resume
request's time, the time per page and the total. The lock (``FOR UPDATE
SKIP LOCKED``), the queue entries and the ``released`` rows and events are
the real ones.

The queue builds every SendMessageBatch request body as SqsMessageQueue
builds it (JSON bodies, attributes) and sends none: SQS's own latency
(about 10-30 ms a call from a Lambda in the same region, 8 calls in flight)
is not in these figures; docs/benchmarks.md says what it adds.

Needs PostgreSQL on 127.0.0.1. The database (created and migrated if
missing) is MAILROOM_BENCH_DATABASE_URL, default .../mailroom_bench_release
(not the shared bench database: other branches migrate that one).

    .venv/bin/python bench/queue_release.py [--rows 100000] [--page 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shared"))

from sqlalchemy import text

from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.adapters.queue import (
    SQS_BATCH_ENTRIES,
    TRACE_ID_ATTRIBUTE,
    MessageQueue,
    QueueEntry,
)
from mailroom.domain.queues import QueueState
from mailroom.services import queues

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_release",
)


class BatchBodies(MessageQueue):
    """SendMessageBatch bodies built as SqsMessageQueue builds them, not sent."""

    def __init__(self) -> None:
        self.entries = 0
        self.calls = 0

    def enqueue(self, message_id: uuid.UUID, trace_id: str) -> None:
        self.enqueue_many([QueueEntry(message_id, trace_id)])

    def enqueue_many(self, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        for start in range(0, len(entries), SQS_BATCH_ENTRIES):
            batch = entries[start : start + SQS_BATCH_ENTRIES]
            request = [
                {
                    "Id": str(index),
                    "MessageBody": json.dumps({"message_id": str(entry.message_id)}),
                    "DelaySeconds": entry.delay_seconds,
                    "MessageAttributes": {
                        TRACE_ID_ATTRIBUTE: {"DataType": "String", "StringValue": entry.trace_id}
                    },
                    **({"MessageGroupId": entry.group_id} if entry.group_id else {}),
                }
                for index, entry in enumerate(batch)
            ]
            json.dumps(request)
            self.calls += 1
            self.entries += len(batch)
        return set()


def prepare(database: Database, rows: int) -> tuple[uuid.UUID, uuid.UUID]:
    """A client, its paused queue and ``rows`` held messages in it, a millisecond apart."""
    client_id, queue_id = uuid.uuid4(), uuid.uuid4()
    with database.engine.begin() as connection:
        connection.execute(
            text("TRUNCATE message_events, messages, message_recipients, queues, clients CASCADE")
        )
        connection.execute(
            text(
                "INSERT INTO clients (id, name, api_key_prefix, quota_limit, rate_limit) "
                "VALUES (:id, 'bench', :prefix, 1000000, 1000)"
            ),
            {"id": client_id, "prefix": f"mr_live_{uuid.uuid4().hex[:24]}"},
        )
        connection.execute(
            text(
                "INSERT INTO queues (id, client_id, name, priority, state) "
                "VALUES (:id, :client_id, 'newsletter', 2, 'paused')"
            ),
            {"id": queue_id, "client_id": client_id},
        )
        connection.execute(
            text(
                """
                INSERT INTO messages (id, client_id, queue_id, trace_id, template_name,
                                      from_address, recipient, to_addresses, status, created_at)
                SELECT gen_random_uuid(), :client_id, :queue_id, md5(n::text), 'welcome',
                       'noreply@example.com', 'ada@example.com',
                       '["ada@example.com"]'::jsonb, 'held',
                       now() - interval '1 hour' + n * interval '1 millisecond'
                FROM generate_series(1, :rows) AS n
                """
            ),
            {"client_id": client_id, "queue_id": queue_id, "rows": rows},
        )
        connection.execute(text("ANALYZE messages"))
    return client_id, queue_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=1000)
    args = parser.parse_args()

    ensure_database_exists(DATABASE_URL)
    upgrade_to_head(DATABASE_URL)
    database = Database(DATABASE_URL, pool_size=2)
    started = time.perf_counter()
    client_id, queue_id = prepare(database, args.rows)
    print(f"wrote {args.rows:,} held rows in {time.perf_counter() - started:.1f} s")

    queue = BatchBodies()
    uow = SqlUnitOfWork(database)
    began = time.perf_counter()
    change = queues.set_state(
        uow, queue, client_id, str(queue_id), QueueState.ACTIVE, page_size=args.page
    )
    answered = time.perf_counter() - began
    pages: list[float] = []
    released = change.released
    while True:
        page_started = time.perf_counter()
        report = queues.release_requested(
            uow, queue, page_size=args.page, deadline=time.monotonic() + 10.0
        )
        if report.pages:
            pages.append((time.perf_counter() - page_started) * 1000 / report.pages)
        released += report.released
        if not report.budget_exhausted:
            break
    total = time.perf_counter() - began
    with database.engine.connect() as connection:
        held, events = connection.execute(
            text(
                "SELECT (SELECT count(*) FROM messages WHERE status = 'held'), "
                "(SELECT count(*) FROM message_events WHERE type = 'released')"
            )
        ).one()
    print(f"page size {args.page}; SendMessageBatch requests built {queue.calls:,}")
    print(
        f"resume answered in {answered * 1000:.0f} ms with {change.released:,} released "
        f"(releasing: {change.releasing})"
    )
    print(
        f"released {released:,} of {args.rows:,} in {total:.1f} s "
        f"({held} left held, {events:,} released events)"
    )
    if pages:
        print(
            f"release passes {len(pages)}: mean ms per page {statistics.fmean(pages):.0f}, "
            f"max {max(pages):.0f}"
        )
    database.dispose()


if __name__ == "__main__":
    main()
