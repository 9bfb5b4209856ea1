"""Event ingestion into PostgreSQL (issue 21 item 3): provider batches and tracking hits.

Two measurements, each on real PostgreSQL (and Redis for the hits):

* ``feedback``: SendGrid-style batches of 50 events (deliveries, opens,
  clicks, a bounce) reconciled one request after another by
  ``record_delivery_events``;
* ``tracking``: hits queued as the tracking function queues them (the Redis
  script: limit, stream, doorbell), then one consumer's drain writes them
  (``services/tracking_ingest.drain``, batches of 500).

Besides events a second of wall-clock, each reports the CPU time the work
cost: this process's, plus the PostgreSQL backend's serving it (and
Redis's for the hits), read from /proc. On a machine shared with other work
the wall-clock rate moves with the load; the CPU per event does much less,
and 2 / (CPU per event) is what two otherwise idle cores would sustain with
two consumers (the writes of two consumers do not wait for each other:
tests/integration/test_tracking_ingest.py).

Needs PostgreSQL and Redis on this machine (MAILROOM_BENCH_DATABASE_URL,
MAILROOM_BENCH_REDIS_URL to override; /proc must show their processes).

    PYTHONHASHSEED=0 .venv/bin/python bench/ingestion.py [--batches 100] [--hits 20000]
        [--only feedback|tracking]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shared"))

import redis  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head  # noqa: E402
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork  # noqa: E402
from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType, RejectReason  # noqa: E402
from mailroom.domain.model import Client, Message, MessageStatus  # noqa: E402
from mailroom.services.feedback import record_delivery_events  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_ingestion",
)
REDIS_URL = os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
NOW = datetime.now(UTC)
TICKS = os.sysconf("SC_CLK_TCK")
KINDS = (
    FeedbackEventType.DELIVERED,
    FeedbackEventType.OPENED,
    FeedbackEventType.CLICKED,
    FeedbackEventType.DELIVERED,
    FeedbackEventType.BOUNCED,
)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (or 0 when /proc does not show it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def fresh_database() -> Database:
    ensure_database_exists(DATABASE_URL)
    engine = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade_to_head(DATABASE_URL)
    # One connection: its backend is the one whose CPU is counted.
    return Database(DATABASE_URL, pool_size=1, max_overflow=0)


def sent_messages(database: Database, count: int) -> list[Message]:
    client = Client(uuid.uuid4(), "bench", f"mr_live_{uuid.uuid4().hex[:24]}", 600, 10**6)
    messages = []
    with SqlUnitOfWork(database) as uow:
        uow.clients.add(client)
        for n in range(count):
            message = Message(
                id=uuid.uuid4(),
                client_id=client.id,
                trace_id="t",
                template_name="welcome",
                from_address="noreply@example.com",
                to=[f"user{n}@example.com"],
                status=MessageStatus.SENT,
                provider="sendgrid",
                provider_msg_id=f"sg-{n}",
            )
            uow.messages.add(message)
            uow.messages.save_outcome(message)
            messages.append(message)
        uow.commit()
    return messages


def backend_pid(database: Database) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def timed(work: Callable[[], object], pids: list[int]) -> tuple[float, float, float]:
    """(wall seconds, this process's CPU seconds, ``pids``' CPU seconds) of ``work``."""
    own, others = time.process_time(), sum(cpu_seconds(pid) for pid in pids)
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    return (
        wall,
        time.process_time() - own,
        sum(cpu_seconds(pid) for pid in pids) - others,
    )


def report(name: str, events: int, wall: float, own: float, others: float) -> None:
    cpu = own + others
    print(
        f"{name:44} {events:7d} events  {events / wall:8.0f}/s wall  "
        f"{cpu / events * 1e6:7.0f} µs CPU/event (client {own / events * 1e6:.0f}, "
        f"servers {others / events * 1e6:.0f})  {2 * events / cpu:8.0f}/s on 2 idle cores"
    )


def feedback(batches: int, processes: int = 1) -> None:
    database = fresh_database()
    messages = sent_messages(database, 2000)
    counter = iter(range(10**9))

    def batch() -> list[DeliveryEvent]:
        events = []
        for position in range(50):
            n = next(counter)
            kind = KINDS[position % len(KINDS)]
            events.append(
                DeliveryEvent(
                    provider="sendgrid",
                    event_type=kind,
                    event_id=f"sg-event-{n}",
                    timestamp=NOW,
                    message_id=f"sg-{n % len(messages)}",
                    recipient=f"user{n % len(messages)}@example.com",
                    reject_reason=RejectReason.BOUNCED
                    if kind is FeedbackEventType.BOUNCED
                    else None,
                    mta_response="250 OK",
                )
            )
        return events

    for _ in range(5):  # warm: connection, statement caches
        record_delivery_events(SqlUnitOfWork(database), batch())
    prepared = [batch() for _ in range(batches)]
    pid = backend_pid(database)

    def run() -> None:
        for events in prepared:
            record_delivery_events(SqlUnitOfWork(database), events)

    report("feedback: SendGrid-style 50-event batches", 50 * batches, *timed(run, [pid]))
    if processes > 1:
        # As several webhook function instances would: each process its own
        # connection and its share of new batches (fresh event ids), at once.
        shares = [[batch() for _ in range(batches)] for _ in range(processes)]
        database.dispose()
        started = time.perf_counter()
        children = []
        for share in shares:
            pid = os.fork()
            if pid == 0:  # the child: its own engine, never the parent's connections
                own = Database(DATABASE_URL, pool_size=1, max_overflow=0)
                for events in share:
                    record_delivery_events(SqlUnitOfWork(own), events)
                own.dispose()
                os._exit(0)
            children.append(pid)
        failed = sum(1 for child in children if os.waitpid(child, 0)[1] != 0)
        wall = time.perf_counter() - started
        total = 50 * batches * processes
        print(
            f"{'feedback: the same, ' + str(processes) + ' processes at once':44} "
            f"{total:7d} events  {total / wall:8.0f}/s wall  ({failed} processes failed)"
        )
    database.dispose()


def tracking(hits: int) -> None:
    from mailroom.adapters.db.tracking import SqlTrackingStore
    from mailroom.adapters.redis_store import RedisStore
    from mailroom.adapters.redis_tracking import RedisHitQueue
    from mailroom.domain.tracking import LinkKind, LinkPolicy, QueuedHit, TrackingChoice, track_html
    from mailroom.services.tracking import TrackingConfig
    from mailroom.services.tracking_ingest import DrainLimits, drain

    database = fresh_database()
    store = SqlTrackingStore(database)
    messages = sent_messages(database, 200)
    html = '<html><body><a href="https://shop.example/a">a</a></body></html>'
    tokens: list[tuple[str, LinkKind]] = []
    for message in messages:
        tracked = track_html(html, TrackingChoice(True, True), LinkPolicy("https://t.example.com"))
        store.add_links(message.id, tracked.links)
        tokens.extend(
            (link.token, link.kind) for link in tracked.links if link.kind is not LinkKind.HONEYPOT
        )
    engine = create_engine(DATABASE_URL)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE messages SET sent_at = :at"), {"at": NOW - timedelta(hours=1)}
        )
    engine.dispose()
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    redis_pid = int(client.info("server")["process_id"])
    queue = RedisHitQueue(RedisStore(REDIS_URL))
    config = TrackingConfig(base_url="https://t.example.com")

    def push_all() -> None:
        for n in range(hits):
            token, kind = tokens[n % len(tokens)]
            hit = QueuedHit.new(
                token, kind, "Mozilla/5.0 (X11) Chrome/131", "203.0.113.9", time.time()
            )
            queue.push(hit, 10**9)

    report("tracking: queue (the function's Redis script)", hits, *timed(push_all, [redis_pid]))
    pid = backend_pid(database)
    result = []

    def drain_all() -> None:
        result.append(
            drain(store, queue, config, consumer="bench", limits=DrainLimits(run_seconds=3600))
        )

    measured = timed(drain_all, [pid, redis_pid])
    assert result[0].hits_written == hits, result[0]
    report(f"tracking: drain (batches of {DrainLimits().batch_size})", hits, *measured)
    database.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--hits", type=int, default=20_000)
    parser.add_argument("--only", choices=("feedback", "tracking"))
    parser.add_argument(
        "--processes",
        type=int,
        default=4,
        help="feedback batches also from this many processes at once (1: only the serial run)",
    )
    args = parser.parse_args()
    if args.only in (None, "feedback"):
        feedback(args.batches, args.processes)
    if args.only in (None, "tracking"):
        tracking(args.hits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
