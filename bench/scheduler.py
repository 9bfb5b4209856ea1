"""The scheduler with 100,000 messages due in the same minute (issue 18).

Writes N ``scheduled`` rows due over the next minute straight to PostgreSQL,
then runs scheduler passes (services/scheduler.py, the Lambda's code) until
every row is enqueued, and prints the chunk size, the time per chunk and the
total. The claim (``FOR UPDATE SKIP LOCKED``), the queue entries and the
``enqueued_at`` mark are the real ones.

The queue is, by ``--queue``:

- ``batches`` (default): every SendMessageBatch request body is built as
  SqsMessageQueue builds it (JSON bodies, attributes, delays), and not sent.
  Nothing here can stand for SQS's own latency (about 10-30 ms a call from a
  Lambda in the same region, 8 calls in flight per scheduler): see
  docs/benchmarks.md for what that adds.
- ``moto``: moto's SQS server on a free port. Only for a few thousand rows:
  moto slows down as its queue grows, so it measures moto, not Mailroom.
- ``localstack``: LocalStack's SQS (a real SQS API implementation), the
  SendMessageBatch calls sent as the Lambda sends them (SqsMessageQueue, 8 in
  flight). The one at ``--localstack-url`` if it answers, else one started on
  a free port from .venv-localstack (``make .venv-localstack/.installed``) and
  stopped at the end. LocalStack runs on the same cores as the scheduler and
  PostgreSQL, so its figures are pessimistic; the bench prints LocalStack's
  CPU share of the run (when it started it) and the load average.

Needs PostgreSQL on 127.0.0.1. The database (created and migrated if
missing) is MAILROOM_BENCH_DATABASE_URL, default .../mailroom_bench_schedule
(not the shared bench database: other branches migrate that one).

    .venv/bin/python bench/scheduler.py [--rows 100000] [--chunk 1000] \\
        [--queue batches|moto|localstack] [--localstack-url URL]
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shared"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devstack, for --queue localstack

from sqlalchemy import text

from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.adapters.queue import (
    SQS_BATCH_ENTRIES,
    TRACE_ID_ATTRIBUTE,
    MessageQueue,
    QueueEntry,
    SqsMessageQueue,
)
from mailroom.domain.model import Client, Message
from mailroom.domain.scheduling import Schedule, ScheduleRun
from mailroom.services.scheduler import (
    SchedulerPolicy,
    SchedulerReport,
    SystemClock,
    scheduler_pass,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_schedule",
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
                }
                for index, entry in enumerate(batch)
            ]
            json.dumps(request)
            self.calls += 1
            self.entries += len(batch)
        return set()


def no_runs(schedule: Schedule, client: Client, run: ScheduleRun) -> list[Message]:
    raise AssertionError("the bench has no schedules")


def prepare(database: Database, rows: int, now: datetime) -> None:
    with database.engine.begin() as connection:
        connection.execute(
            text("TRUNCATE message_events, messages, message_recipients, clients CASCADE")
        )
        client_id = uuid.uuid4()
        connection.execute(
            text(
                "INSERT INTO clients (id, name, api_key_prefix, quota_limit, rate_limit) "
                "VALUES (:id, 'bench', :prefix, 1000000, 1000)"
            ),
            {"id": client_id, "prefix": f"mr_live_{uuid.uuid4().hex[:24]}"},
        )
        # Due over the next minute (10 ms apart per 1,000 rows), as a burst
        # of sends scheduled for the same minute would be.
        connection.execute(
            text(
                """
                INSERT INTO messages (id, client_id, trace_id, template_name, from_address,
                                      recipient, to_addresses, status, scheduled_at)
                SELECT gen_random_uuid(), :client_id, md5(n::text), 'welcome',
                       'noreply@example.com', 'ada@example.com',
                       '["ada@example.com"]'::jsonb, 'scheduled',
                       CAST(:now AS timestamptz)
                         + make_interval(secs => 1 + 58.0 * n / :rows)
                FROM generate_series(1, :rows) AS n
                """
            ),
            {"client_id": client_id, "rows": rows, "now": now},
        )
        connection.execute(text("ANALYZE messages"))


def moto_queue() -> tuple[MessageQueue, object]:
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="bench")["QueueUrl"]
    return SqsMessageQueue(url, "us-east-1"), server


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalStackSqs:
    """A LocalStack SQS queue for the run; started here (and its CPU time read) if none answers."""

    def __init__(self, endpoint: str | None) -> None:
        import boto3

        from devstack import localstack

        os.environ["AWS_ACCESS_KEY_ID"] = "test"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "test"
        self.process: Any = None
        if endpoint is None or not localstack.answers(endpoint):
            endpoint = f"http://127.0.0.1:{free_port()}"
            log_path = REPO_ROOT / ".local" / "bench-localstack.log"
            started = time.perf_counter()
            self.process = localstack.start_on_host(endpoint, log_path)
            print(f"started LocalStack at {endpoint} in {time.perf_counter() - started:.1f} s")
        self.endpoint = endpoint
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        sqs = boto3.client("sqs", region_name="us-east-1")
        name = f"bench-scheduler-{uuid.uuid4().hex[:8]}"
        self.url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
        self._sqs = sqs

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the LocalStack process (Linux /proc), if this bench started it."""
        if self.process is None:
            return None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # Fields 14 and 15 of proc(5) (utime, stime), counted from after the command name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def visible_messages(self) -> int:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesDelayed"]
        )

    def close(self) -> None:
        from devstack import localstack

        if self.process is not None:
            localstack.stop(self.process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--queue", choices=("batches", "moto", "localstack"), default="batches")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120,
        help="stop running passes after this long (the rows left are reported)",
    )
    parser.add_argument(
        "--localstack-url",
        default=None,
        help="a LocalStack to use if it answers; default: start one on a free port",
    )
    args = parser.parse_args()

    ensure_database_exists(DATABASE_URL)
    upgrade_to_head(DATABASE_URL)
    database = Database(DATABASE_URL, pool_size=2)
    now = datetime.now(UTC)
    started = time.perf_counter()
    prepare(database, args.rows, now)
    print(f"wrote {args.rows:,} scheduled rows in {time.perf_counter() - started:.1f} s")

    server = None
    localstack_sqs: LocalStackSqs | None = None
    queue: MessageQueue
    if args.queue == "moto":
        queue, server = moto_queue()
    elif args.queue == "localstack":
        localstack_sqs = LocalStackSqs(args.localstack_url)
        queue = SqsMessageQueue(localstack_sqs.url, "us-east-1")
    else:
        queue = BatchBodies()
    policy = SchedulerPolicy(chunk_size=args.chunk, time_budget_seconds=45.0)
    clock = SystemClock()
    reports: list[SchedulerReport] = []
    load_before = os.getloadavg()
    localstack_cpu_before = localstack_sqs.cpu_seconds() if localstack_sqs else None
    own_cpu_before = time.process_time()
    began = time.perf_counter()
    enqueued = 0
    while enqueued < args.rows and time.perf_counter() - began < args.max_seconds:
        report = scheduler_pass(SqlUnitOfWork(database), queue, no_runs, policy=policy, clock=clock)
        reports.append(report)
        enqueued += report.enqueued
        if report.enqueued == 0:
            time.sleep(0.5)  # rows not yet within the look-ahead
    total = time.perf_counter() - began
    own_cpu = time.process_time() - own_cpu_before
    load_after = os.getloadavg()
    chunks = [seconds * 1000 for report in reports for seconds in report.chunk_seconds]
    with database.engine.connect() as connection:
        left = connection.execute(
            text("SELECT count(*) FROM messages WHERE enqueued_at IS NULL")
        ).scalar_one()
    print(f"queue: {args.queue}; chunk size {args.chunk}; passes {len(reports)}")
    print(f"enqueued {enqueued:,} of {args.rows:,} in {total:.1f} s ({left} left unreleased)")
    print(
        f"chunks {len(chunks)}: mean {statistics.fmean(chunks):.0f} ms, "
        f"median {statistics.median(chunks):.0f} ms, max {max(chunks):.0f} ms"
    )
    print(f"within the minute: {'yes' if left == 0 and total <= 60 else 'no'}")
    if enqueued:
        print(f"per message: {total / enqueued * 1e6:.0f} us wall")
    print(f"bench process CPU: {own_cpu:.1f} s ({own_cpu / total:.0%} of one core)")
    if localstack_sqs is not None:
        cpu_after = localstack_sqs.cpu_seconds()
        if localstack_cpu_before is not None and cpu_after is not None:
            used = cpu_after - localstack_cpu_before
            print(
                f"LocalStack CPU: {used:.1f} s ({used / total:.0%} of one core, "
                f"{used / total / (os.cpu_count() or 1):.0%} of the machine)"
            )
        print(f"messages in the LocalStack queue: {localstack_sqs.visible_messages():,}")
    print(
        "load average (1/5/15 min) before: "
        + " ".join(f"{value:.2f}" for value in load_before)
        + "; after: "
        + " ".join(f"{value:.2f}" for value in load_after)
    )
    database.dispose()
    if server is not None:
        server.stop()  # type: ignore[attr-defined]
    if localstack_sqs is not None:
        localstack_sqs.close()


if __name__ == "__main__":
    main()
