"""Bulk batches (issue 17): POST /v1/batches with 10,000 recipients, and the planner's rate.

1. ``POST /v1/batches`` with 10,000 inline recipients through the batches
   function's resolver (client gate included) on the real PostgreSQL and
   Redis, with a planner queue that does nothing: handler and database, no
   queue. Median of ``--posts`` requests after one warm-up.
2. The planner writing an NDJSON file of ``--recipients`` recipients into
   PostgreSQL (messages, recipient rows, accepted events, counters), with a
   send queue that does nothing: the file is generated line by line as S3
   would stream it, so nothing but the planner holds it. Prints recipients/s
   and the process's peak RSS, sampled every chunk, so a growing memory shows.

Needs PostgreSQL and Redis on 127.0.0.1: MAILROOM_BENCH_DATABASE_URL (default
.../mailroom_bench, created and migrated if missing) and MAILROOM_BENCH_REDIS_URL
(default redis://127.0.0.1:6379/14).

    .venv/bin/python bench/batches.py [--posts 5] [--recipients 200000] [--chunk 10000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "shared"), str(REPO)]

from sqlalchemy import create_engine, text  # noqa: E402

from bench._worker_bench import prepare_database  # noqa: E402
from mailroom.adapters.queue import MessageQueue, PlannerQueue, QueueEntry  # noqa: E402
from mailroom.adapters.recipient_files import RecipientFiles  # noqa: E402
from mailroom.bootstrap import Services, bootstrap  # noqa: E402
from mailroom.config import Settings  # noqa: E402
from mailroom.entrypoints.api import create_api  # noqa: E402
from mailroom.entrypoints.batches import batch_routes  # noqa: E402
from mailroom.entrypoints.client_gate import ClientGate  # noqa: E402
from mailroom.entrypoints.observability import logger  # noqa: E402
from mailroom.services import batches  # noqa: E402
from mailroom.services.clients import register_client  # noqa: E402
from tests.events import FakeLambdaContext, request_event  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench"
)
REDIS_URL = os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


class NoPlannerQueue(PlannerQueue):
    def request_planning(
        self, batch_id: uuid.UUID, trace_id: str, *, delay_seconds: int = 0
    ) -> None:
        return None


class NoQueue(MessageQueue):
    def enqueue(self, message_id: uuid.UUID, trace_id: str) -> None:
        return None

    def enqueue_many(self, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        return set()


class GeneratedFile(RecipientFiles):
    """An NDJSON file of ``count`` recipients, produced as S3 streams one: in 256 KB chunks."""

    def __init__(self, count: int) -> None:
        self.count = count

    def upload_url(self, key: str, expires_seconds: int, content_type: str) -> str:
        return "http://bench.invalid/"

    def size(self, key: str) -> int | None:
        return 1

    def freeze(self, source: str, target: str) -> None:
        return None

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        assert offset == 0, "the bench plans in one run"
        pending: list[bytes] = []
        size = 0
        for i in range(self.count):
            line = (
                f'{{"to": "reader{i}@example.com", "props": {{"first_name": "Reader {i}"}}, '
                f'"metadata": {{"row": {i}}}}}\n'
            ).encode()
            pending.append(line)
            size += len(line)
            if size >= 256 * 1024:
                yield b"".join(pending)
                pending, size = [], 0
        if pending:
            yield b"".join(pending)


class BackendCpu:
    """CPU time (user + system) the bench database's server processes spent, from /proc.

    Only this bench uses its database, and the server is local. Sampled once
    per chunk: the pool replaces a connection every 300 s (``pool_recycle``),
    and a process that has exited can no longer be read, so the figure is
    each process's last sample (at most one chunk of work short per
    replaced connection).
    """

    def __init__(self) -> None:
        self._engine = create_engine(DATABASE_URL)
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self.sample()
        self._first = dict(self._last)

    def sample(self) -> None:
        with self._engine.connect() as connection:
            own = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            pids = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            ).scalars()
            for pid in pids:
                if pid != own:
                    seconds = self._read(int(pid))
                    if seconds is not None:
                        self._last[int(pid)] = seconds

    def _read(self, pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime, stime

    def seconds(self) -> float:
        return sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def post_inline(services: Services, posts: int) -> None:
    registered = register_client(
        services.uow(),
        services.hasher,
        name=f"bench-{uuid.uuid4().hex[:8]}",
        quota_limit=1_000_000_000,  # every inline recipient counts (issue 17)
    )
    api = create_api(
        [batch_routes(lambda: services)],
        max_request_bytes=lambda: services.settings.batch_max_request_bytes,
        client_gate=ClientGate(lambda: services),
    )
    body = {
        "template": "welcome",
        "props": {"product_name": "Mailroom", "action_url": "https://example.com", "steps": []},
        "recipients": [
            {"to": f"reader{i}@example.com", "props": {"first_name": f"R{i}"}, "metadata": {"i": i}}
            for i in range(10_000)
        ],
    }
    event = request_event(
        "POST",
        "/v1/batches",
        body=body,
        X_Api_Key=registered.api_key,
        X_Api_Secret=registered.api_secret,
    )
    print(f"request body: {len(event['body']) / 1e6:.2f} MB")
    timings = []
    for attempt in range(posts + 1):
        started = time.perf_counter()
        answer = api.resolve(dict(event), FakeLambdaContext())
        elapsed = time.perf_counter() - started
        assert answer["statusCode"] == 202, answer["body"][:500]
        if attempt:  # the first warms the instance up
            timings.append(elapsed)
    print(
        f"POST /v1/batches, 10,000 inline recipients (handler + DB, no queue), {posts} requests: "
        f"median {statistics.median(timings) * 1000:.0f} ms, "
        f"min {min(timings) * 1000:.0f} ms, max {max(timings) * 1000:.0f} ms"
    )


def plan_file(services: Services, recipients: int, chunk: int) -> None:
    registered = register_client(
        services.uow(),
        services.hasher,
        name=f"bench-{uuid.uuid4().hex[:8]}",
        quota_limit=1_000_000_000,  # every inline recipient counts (issue 17)
    )
    files = GeneratedFile(recipients)
    from mailroom.domain.batches import BatchRequest

    accepted = batches.accept_batch(
        services.uow(),
        services.templates,
        NoPlannerQueue(),
        files,
        services.batch_limits,
        client=registered.client,
        request=BatchRequest.model_validate({"template": "welcome", "recipients_upload": True}),
        trace_id="bench",
    )
    batch_id = accepted.batch.id
    batches.start_batch(
        services.uow(), NoPlannerQueue(), files, client_id=registered.client.id, batch_id=batch_id
    )
    samples: list[tuple[float, float]] = []
    backends = BackendCpu()
    cpu_before = process_cpu_seconds()
    started = time.perf_counter()
    rss_before = peak_rss_mb()

    def keep_going() -> bool:
        samples.append((time.perf_counter() - started, peak_rss_mb()))
        backends.sample()
        return True

    result = batches.plan_batch(
        services.uow(),
        NoQueue(),
        files,
        batch_id=batch_id,
        chunk_size=chunk,
        keep_going=keep_going,
        quota=services.quota,  # each chunk is counted, as the planner function does
    )
    elapsed = time.perf_counter() - started
    planner_cpu = process_cpu_seconds() - cpu_before
    backends.sample()
    backend_cpu = backends.seconds()
    assert result.done
    batch = batches.get_batch(services.uow(), client_id=registered.client.id, batch_id=batch_id)
    assert batch.planned == recipients, (batch.planned, recipients)
    assert batch.queued == recipients
    print(
        f"planner, {recipients:,} NDJSON recipients in chunks of {chunk}: {elapsed:.1f} s, "
        f"{recipients / elapsed:,.0f} recipients/s into PostgreSQL"
    )
    # CPU per recipient does not depend on how busy the shared machine is
    # the way the wall-clock rate does: compare these across runs.
    print(
        f"CPU per recipient: planner process {planner_cpu / recipients * 1e6:.1f} µs "
        f"({planner_cpu:.1f} s), PostgreSQL backends {backend_cpu / recipients * 1e6:.1f} µs "
        f"({backend_cpu:.1f} s); load average {os.getloadavg()[0]:.1f}"
    )
    quarter = max(1, len(samples) // 4)
    marks = ", ".join(f"{t:.0f} s {rss:.0f} MB" for t, rss in samples[quarter - 1 :: quarter])
    print(f"peak RSS: {rss_before:.0f} MB before planning; during it: {marks}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=5)
    parser.add_argument("--recipients", type=int, default=200_000)
    # The planner function's own chunk size unless told otherwise.
    parser.add_argument(
        "--chunk", type=int, default=Settings.model_fields["planner_chunk_size"].default
    )
    parser.add_argument("--skip-post", action="store_true")
    options = parser.parse_args()
    logging.disable(logging.INFO)
    logger.setLevel(logging.WARNING)
    # A fresh schema each run (STACK-NOTES "Measuring": fresh bench state).
    # Deleting an earlier run's rows instead left their dead tuples and index
    # entries behind, and autovacuum working through them during the run:
    # the rate then depended on how many runs came before.
    prepare_database(DATABASE_URL, REDIS_URL)
    settings = Settings(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        templates_dir=REPO / "templates",
        argon2_time_cost=2,
    )
    services = bootstrap(settings, planner_queue=NoPlannerQueue(), queue=NoQueue())
    if not options.skip_post:
        post_inline(services, options.posts)
    plan_file(services, options.recipients, options.chunk)
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb())}))


if __name__ == "__main__":
    main()
