"""The local runner's HTTP path: achieved req/s and latency at a fixed offered load.

Starts ``python -m devstack`` (the local runner: Werkzeug in front of the
Lambda handlers, moto for SQS, its own SMTP sink) on free ports on 127.0.0.1,
then offers a fixed rate of requests for a fixed time, open loop: request i
is due at start + i / rate, and its latency is counted from when it was due,
so a stall shows as latency instead of silently lowering the offered load.
Two loads: ``GET /health`` (the gateway and resolver alone) and
``POST /v1/send`` (auth, rate limit, validation, insert, SQS through moto;
the runner's worker sends the mail meanwhile, as it would in use).

Needs PostgreSQL and Redis on 127.0.0.1: MAILROOM_BENCH_HTTP_DATABASE (default
mailroom_bench_http, dropped first) and MAILROOM_BENCH_REDIS_URL (default
redis://127.0.0.1:6379/14). Bounded: start-up plus 2 x ``--seconds``.

    .venv/bin/python bench/http_runner.py [--seconds 10] [--health-rate 50] [--send-rate 25]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "shared"), str(REPO)]

from sqlalchemy import create_engine, text  # noqa: E402

from tests.e2e.harness import SAMPLE_PROPS, Runner, kill, start_runner  # noqa: E402

POSTGRES_SERVER = "postgresql+pg8000://postgres@127.0.0.1:5432"
DATABASE = os.environ.get("MAILROOM_BENCH_HTTP_DATABASE", "mailroom_bench_http")
os.environ.setdefault(
    "MAILROOM_E2E_REDIS_URL",
    os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
)
THREADS = 16


def fresh_database() -> str:
    server = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    finally:
        server.dispose()
    return f"{POSTGRES_SERVER}/{DATABASE}"


def offer(
    port: int, rate: float, seconds: float, request: Callable[[http.client.HTTPConnection], int]
) -> tuple[list[float], int, float]:
    """Open-loop load: latencies (s, from due time), errors, wall time to the last answer."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    next_index = 0
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0

    def work() -> None:
        nonlocal next_index, errors
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                index = next_index
                next_index += 1
            if index >= total:
                break
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                status = request(connection)
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                status = 0
            elapsed = time.perf_counter() - due
            with lock:
                latencies.append(elapsed)
                if status >= 400 or status == 0:
                    errors += 1
        connection.close()

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds * 4 + 30)
    return latencies, errors, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--health-rate", type=float, default=50.0)
    parser.add_argument("--send-rate", type=float, default=25.0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="mailroom-bench-http-"))
    runner: Runner | None = None
    try:
        runner = start_runner(folder / "local", fresh_database(), folder / "runner.log")
        port = int(runner.api_url.rsplit(":", 1)[1])
        headers = {**runner.auth_headers(), "Content-Type": "application/json"}
        body = json.dumps(
            {
                "template": "welcome",
                "to": ["ada@example.com"],
                "props": SAMPLE_PROPS,
            }
        )

        def health(connection: http.client.HTTPConnection) -> int:
            connection.request("GET", "/health")
            answer = connection.getresponse()
            answer.read()
            return answer.status

        def send(connection: http.client.HTTPConnection) -> int:
            connection.request("POST", "/v1/send", body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            return answer.status

        # Warm: first requests build the handlers' services and pools.
        offer(port, 20, 1, health)
        offer(port, 10, 1, send)
        rows = []
        for label, rate, request in (
            ("GET /health", args.health_rate, health),
            ("POST /v1/send", args.send_rate, send),
        ):
            latencies, errors, wall = offer(port, rate, args.seconds, request)
            ordered = sorted(latencies)
            rows.append(
                (
                    label,
                    rate,
                    len(ordered) / wall,
                    statistics.median(ordered) * 1000,
                    ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
                    len(ordered),
                    errors,
                )
            )
    finally:
        if runner is not None:
            runner.stop()
            kill(runner)
        shutil.rmtree(folder, ignore_errors=True)

    print(
        f"local runner (python -m devstack) on 127.0.0.1, open loop, {THREADS} client threads, "
        f"{args.seconds:.0f} s per load; load average now {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'request':<16}{'offered/s':>10}{'achieved/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'n':>7}{'errors':>8}"
    )
    for label, rate, achieved, p50, p99, count, errors in rows:
        print(
            f"{label:<16}{rate:>10.0f}{achieved:>12.1f}{p50:>9.1f}{p99:>9.1f}{count:>7}{errors:>8}"
        )


if __name__ == "__main__":
    main()
