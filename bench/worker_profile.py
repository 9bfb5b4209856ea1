"""Where the worker's CPU goes: one process, CPU time per email, and a cProfile of it.

Feeds 100 SQS-shaped batches of 10 (after one warm-up batch) to the worker
handler in this process, against the same sink, database and rows as
bench/worker_pipeline.py. Prints the worker's CPU time per email (process
time, so steadier than a rate when the machine is shared), the CPU that
PostgreSQL and Redis spent meanwhile (their processes' user + system time
from /proc), and, with --profile, the functions with the most cumulative
CPU time (cProfile timed with process_time; it slows the run about threefold
but keeps the shares). Needs PostgreSQL and Redis on 127.0.0.1 (the same
MAILROOM_BENCH_* variables as worker_pipeline.py). About twenty seconds.

``--rows batch`` (issue 17): the rows are one bulk batch's messages, accepted
and planned by the real planner as in worker_pipeline.py's batch mode,
instead of single sends. ``--prepare-apart`` writes the rows (and, always,
checks afterwards that every message reads sent) in a child process, so
that an instruction count of this process (bench/instructions.py) is the
worker's alone: the planner and the single-send insert cost different
amounts per row, and in this process they would count as the worker's.

    .venv/bin/python bench/worker_profile.py [--profile [--sort tottime]] [--batches 100]
    .venv/bin/python bench/worker_profile.py --rows batch [--prepare-apart]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import multiprocessing
import os
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shared"))
sys.path.insert(0, str(REPO))
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

from bench import _observability as observability  # noqa: E402
from bench._worker_bench import (  # noqa: E402
    BenchContext,
    build_services,
    new_client,
    prepare_database,
)
from bench.worker_pipeline import (  # noqa: E402
    BATCH_SIZE,
    DATABASE_URL,
    REDIS_URL,
    TEMPLATES,
    event_ids,
    plan_events,
    queue_events,
    register_signing_domain,
    run_sink,
    unsent,
)
from mailroom.bootstrap import Services  # noqa: E402
from mailroom.entrypoints.worker import process_send_batch  # noqa: E402

SERVERS = frozenset({"postgres", "redis-server"})
RENDER_TIMEOUT_MS = 10_000


def server_cpu_seconds() -> float:
    """User + system time of every PostgreSQL and Redis process, with reaped children."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() not in SERVERS:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # utime, stime, cutime, cstime: the 14th to 17th fields of stat(5).
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def prepare_rows(
    rows: str, port: int, batches: int, dkim: bool, services: Services | None = None
) -> tuple[list[dict[str, Any]], list[uuid.UUID]]:
    """A client, its rows (single sends, or one planned bulk batch), their SQS events."""
    if services is None:
        services = build_services(DATABASE_URL, REDIS_URL, TEMPLATES, port, reuse=True)
    client_id = new_client(services)
    if dkim:
        register_signing_domain(services, client_id, ed25519=False)
    if rows == "batch":
        (events,), batch_ids = plan_events(services, client_id, 1, batches)
        return events, batch_ids
    return queue_events(services, client_id, batches), []


def check_sent(port: int, message_ids: list[uuid.UUID], batch_ids: list[uuid.UUID]) -> str | None:
    services = build_services(DATABASE_URL, REDIS_URL, TEMPLATES, port, reuse=True)
    return unsent(services, message_ids, batch_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    parser.add_argument(
        "--sort", default="cumulative", help="cProfile order: cumulative or tottime (self time)"
    )
    parser.add_argument(
        "--dkim", action="store_true", help="sign each message (RSA-2048) as the worker does"
    )
    parser.add_argument(
        "--gate",
        choices=("default", "none", "all"),
        default="default",
        help="issue 20's claim gate: as deployed (the queue read), none (as before), or "
        "every check (in-flight count and a Redis send-rate bucket too)",
    )
    parser.add_argument(
        "--rows",
        choices=("single", "batch"),
        default="single",
        help="single sends as the send API writes them, or one bulk batch's messages as the "
        "planner writes them (issue 17)",
    )
    parser.add_argument(
        "--prepare-apart",
        action="store_true",
        help="write the rows in a child process: this process then runs the worker alone",
    )
    args = parser.parse_args()
    observability.apply()

    prepare_database(DATABASE_URL, REDIS_URL)
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    counts = context.Array("q", 3)
    sink = context.Process(target=run_sink, args=(ready, stop, counts), daemon=True)
    sink.start()
    # The check, and with --prepare-apart the rows too, run in this child:
    # spawned, so neither counts in this process's instructions.
    helper = concurrent.futures.ProcessPoolExecutor(1, mp_context=context)
    try:
        port = int(ready.get(timeout=30))
        services = build_services(
            DATABASE_URL,
            REDIS_URL,
            TEMPLATES,
            port,
            reuse=True,
            dkim_signing=args.dkim,
            # bench/instructions.py runs this under callgrind, where a render can
            # pass the 200 ms deadline and fail its message (the check below
            # then stops the run): the deadline is the longest allowed.
            render_timeout_ms=RENDER_TIMEOUT_MS,
        )
        if args.gate == "none":
            services.queue_routing = False
        elif args.gate == "all":
            from mailroom.adapters.claim_limits import RedisClaimRateLimiter
            from mailroom.services.queues import ClaimGate

            assert services.redis_store is not None
            services.claim_gate_given = ClaimGate(
                RedisClaimRateLimiter(services.redis_store),
                client_sends_per_minute=10**9,
                client_max_in_flight=10**6,
            )
        if args.prepare_apart:
            events, batch_ids = helper.submit(
                prepare_rows, args.rows, port, args.batches + 1, args.dkim
            ).result()
        else:
            events, batch_ids = prepare_rows(args.rows, port, args.batches + 1, args.dkim, services)
        # The JSON log lines are still written (their cost is real), to /dev/null.
        stdout = os.dup(1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        process_send_batch(events[0], BenchContext(), services)  # type: ignore[arg-type]
        profiler = cProfile.Profile(time.process_time)
        servers_before, cpu_before = server_cpu_seconds(), time.process_time()
        wall_before = time.perf_counter()
        if args.profile:
            profiler.enable()
        for event in events[1:]:
            process_send_batch(event, BenchContext(), services)  # type: ignore[arg-type]
        profiler.disable()
        wall = time.perf_counter() - wall_before
        cpu = time.process_time() - cpu_before
        servers = server_cpu_seconds() - servers_before
        os.dup2(stdout, 1)
        # A message skipped or failed must not pass for a cheap one.
        problem = helper.submit(check_sent, port, event_ids(events), batch_ids).result()
        if problem is not None:
            raise SystemExit(f"not every message was sent: {problem}")
    finally:
        helper.shutdown()
        stop.set()
        sink.join(timeout=10)

    emails = args.batches * BATCH_SIZE
    print(
        f"worker, one process, {args.batches} batches of {BATCH_SIZE} "
        f"({'one bulk batch' if args.rows == 'batch' else 'single sends'})"
        f"{' (under cProfile)' if args.profile else ''}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"worker CPU per email           {cpu / emails * 1e6:8.0f} µs")
    print(f"PostgreSQL + Redis CPU per email {servers / emails * 1e6:6.0f} µs")
    print(f"wall time per email            {wall / emails * 1e6:8.0f} µs")
    if args.profile:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(40)


if __name__ == "__main__":
    main()
