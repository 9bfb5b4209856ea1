"""The worker's path per message, batches of 10 to an SMTP sink on loopback: reuse on vs off.

Each batch is one ``process_send_batch`` call on a Lambda SQS event of 10
records, exactly as the worker function runs it: load the row from
PostgreSQL, the client's provider order, render the welcome template and
inline its CSS, build the MIME, ask the Redis-backed breaker, send over SMTP,
record the outcome and its event. The sink is aiosmtpd in its own process
(it must not share our GIL). "reuse on" keeps one SMTP connection per batch,
as the worker does; "reuse off" opens one per message. SQS itself is not in
the loop (Lambda's poller receives and deletes; the worker only reads the
event). Prints per-batch wall time (median, p99) and emails/s.

Needs PostgreSQL and Redis on 127.0.0.1: MAILROOM_BENCH_DATABASE_URL (default
postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_worker, recreated
each run) and MAILROOM_BENCH_REDIS_URL (default redis://127.0.0.1:6379/14;
only the breaker keys are touched). Bounded to about a minute.

    .venv/bin/python bench/worker_smtp.py [--batches 40]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shared"))
# Metrics stay off outside Lambda; the logger keeps its usual INFO lines (part
# of the path), sent to /dev/null while timing.
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

import redis  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head  # noqa: E402
from mailroom.adapters.providers.smtp import SmtpProvider  # noqa: E402
from mailroom.adapters.queue_records import QueueRecords  # noqa: E402
from mailroom.bootstrap import Services, bootstrap  # noqa: E402
from mailroom.config import Settings  # noqa: E402
from mailroom.domain.model import Client, EventType, Message  # noqa: E402
from mailroom.entrypoints.worker import process_send_batch  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_worker",
)
REDIS_URL = os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
BATCH_SIZE = 10
WARMUP_BATCHES = 3
SAMPLE_EVENT = json.loads((REPO / "events" / "worker" / "sqs-batch.json").read_text())
SAMPLE_PROPS = json.loads((REPO / "templates" / "welcome" / "sample.json").read_text())


class NoRedriveLimit(QueueRecords):
    """Records never come back in this bench (every send succeeds)."""

    def postpone(self, receipt_handle: str, seconds: int) -> bool:
        raise AssertionError("no retries expected in the bench")

    def max_receive_count(self) -> int | None:
        return None


class BenchContext:
    function_name = "bench-worker"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-worker"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/bench-worker"
    log_stream_name = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 120_000


def run_sink(ready: Any, stop: Any, counts: Any) -> None:
    """aiosmtpd accepting everything; counts sessions and messages in shared ints."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            with counts.get_lock():
                counts[0] += 1
            session.host_name = hostname
            return responses

        async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: Any, session: Any, envelope: Any
        ) -> str:
            with counts.get_lock():
                counts[1] += 1
            return "250 Message accepted"

    # aiosmtpd checks its listener by connecting to the port asked for: no 0.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.put(port)
    stop.wait()
    controller.stop()
    asyncio.set_event_loop(None)


def prepare_database() -> None:
    ensure_database_exists(DATABASE_URL)
    engine = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade_to_head(DATABASE_URL)
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter("mailroom:breaker:*"):
        client.delete(key)


def build_services(port: int, reuse: bool) -> Services:
    settings = Settings(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        templates_dir=REPO / "templates",
        provider_order="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
    )
    return bootstrap(
        settings,
        providers={"smtp": SmtpProvider("127.0.0.1", port, reuse_connection=reuse)},
        queue_records=NoRedriveLimit(),
        health_probes={},
    )


def queue_batch(services: Services, client_id: uuid.UUID) -> dict[str, Any]:
    """Ten queued rows, as the send API leaves them, and the SQS event naming them."""
    template = SAMPLE_EVENT["Records"][0]
    records = []
    with services.uow() as uow:
        for _ in range(BATCH_SIZE):
            message = Message(
                id=uuid.uuid4(),
                client_id=client_id,
                trace_id=uuid.uuid4().hex,
                template_name="welcome",
                from_address="Acme <noreply@acme.example.com>",
                to=["ada@example.com"],
                props=SAMPLE_PROPS,
            )
            uow.messages.add(message)
            uow.messages.append_event(message.id, EventType.ACCEPTED, {})
            record = copy.deepcopy(template)
            record["messageId"] = str(uuid.uuid4())
            record["body"] = json.dumps({"message_id": str(message.id)})
            records.append(record)
        uow.commit()
    return {"Records": records}


def new_client(services: Services) -> uuid.UUID:
    client = Client(
        id=uuid.uuid4(),
        name="bench",
        api_key_prefix=f"mr_live_{uuid.uuid4().hex[:16]}",
        api_secret_hash="unused",
        rate_limit=10**6,
        quota_limit=10**9,
    )
    with services.uow() as uow:
        uow.clients.add(client)
        uow.commit()
    return client.id


@contextmanager
def stdout_to_devnull() -> Iterator[None]:
    # The worker's JSON log lines still get written (that cost is real in
    # Lambda), just not onto this table.
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def measure(
    services: Services, client_id: uuid.UUID, batches: int, sessions: Callable[[], int]
) -> tuple[list[float], float]:
    timings: list[float] = []
    before = sessions()
    with stdout_to_devnull():
        for index in range(WARMUP_BATCHES + batches):
            event = queue_batch(services, client_id)
            started = time.perf_counter()
            answer = process_send_batch(event, BenchContext(), services)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - started
            if answer != {"batchItemFailures": []}:
                raise SystemExit(f"a batch failed: {answer}")
            if index == WARMUP_BATCHES - 1:
                before = sessions()
            if index >= WARMUP_BATCHES:
                timings.append(elapsed)
    return timings, (sessions() - before) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="timed batches per mode")
    args = parser.parse_args()

    prepare_database()
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    counts = context.Array("q", 2)
    sink = context.Process(target=run_sink, args=(ready, stop, counts), daemon=True)
    sink.start()
    port = int(ready.get(timeout=30))
    try:
        rows = []
        for label, reuse in (("reuse on", True), ("reuse off", False)):
            services = build_services(port, reuse)
            client_id = new_client(services)
            timings, per_batch = measure(services, client_id, args.batches, lambda: counts[0])
            ordered = sorted(timings)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            rows.append(
                (
                    label,
                    len(timings),
                    statistics.median(ordered) * 1000,
                    p99 * 1000,
                    BATCH_SIZE / statistics.median(ordered),
                    BATCH_SIZE * len(timings) / sum(timings),
                    per_batch,
                )
            )
    finally:
        stop.set()
        sink.join(timeout=10)

    print(
        f"worker path, batches of {BATCH_SIZE} to an aiosmtpd sink on 127.0.0.1 "
        f"(PostgreSQL + Redis breakers; {WARMUP_BATCHES} warm-up batches not counted)"
    )
    print(
        f"{'mode':<10}{'batches':>8}{'batch ms p50':>14}{'p99':>9}"
        f"{'emails/s p50':>14}{'emails/s all':>14}{'SMTP sessions/batch':>21}"
    )
    for label, n, p50, p99, rate_p50, rate_all, per_batch in rows:
        print(
            f"{label:<10}{n:>8}{p50:>14.1f}{p99:>9.1f}{rate_p50:>14.0f}{rate_all:>14.0f}"
            f"{per_batch:>21.1f}"
        )
    on, off = rows[0][4], rows[1][4]
    print(f"reuse on / off: x{on / off:.2f} emails/s (median batches)")


if __name__ == "__main__":
    main()
