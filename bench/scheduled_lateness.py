"""How late single scheduled messages fire through the local runner (issue 18).

Starts ``python -m devstack`` (the local runner: the Lambda handlers, moto's
SQS, its own SMTP sink) on free ports, sends ``--messages`` messages each
scheduled a few seconds to half a minute ahead (within the look-ahead, so the
send API enqueues them with an SQS delay), waits for all to be sent, and
prints the ``fired_late_ms`` of their ``sent`` events: sent_at minus
scheduled_at, as the worker recorded it.

Needs PostgreSQL and Redis on 127.0.0.1: MAILROOM_BENCH_HTTP_DATABASE (default
mailroom_bench_schedule_http, dropped first) and MAILROOM_BENCH_REDIS_URL
(default redis://127.0.0.1:6379/14).

    .venv/bin/python bench/scheduled_lateness.py [--messages 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "shared"), str(REPO)]

from sqlalchemy import create_engine, text  # noqa: E402

from tests.e2e.harness import SAMPLE_PROPS, Runner, http, kill, start_runner  # noqa: E402

POSTGRES_SERVER = "postgresql+pg8000://postgres@127.0.0.1:5432"
DATABASE = os.environ.get("MAILROOM_BENCH_HTTP_DATABASE", "mailroom_bench_schedule_http")
os.environ.setdefault(
    "MAILROOM_E2E_REDIS_URL",
    os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
)


def fresh_database() -> str:
    server = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    finally:
        server.dispose()
    return f"{POSTGRES_SERVER}/{DATABASE}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="mailroom-bench-lateness-"))
    runner: Runner | None = None
    try:
        runner = start_runner(folder / "local", fresh_database(), folder / "runner.log")
        headers = runner.auth_headers()
        ids: list[str] = []
        last_due = datetime.now(UTC)
        for index in range(args.messages):
            due = datetime.now(UTC) + timedelta(seconds=5 + (index * 25) / args.messages)
            answer = http(
                "POST",
                f"{runner.api_url}/v1/send",
                headers=headers,
                body={
                    "template": "welcome",
                    "to": "ada@example.com",
                    "props": SAMPLE_PROPS,
                    "scheduled_at": due.isoformat(),
                },
            )
            assert answer.status == 202, answer.body
            ids.append(answer.json()["id"])
            last_due = due
        # Read the events only once all are due (and a little more): polling
        # meanwhile would compete with the worker for the runner's one lock.
        time.sleep(max(0.0, (last_due - datetime.now(UTC)).total_seconds()) + 10)
        late: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while len(late) < len(ids) and time.monotonic() < deadline:
            for message_id in ids:
                if message_id in late:
                    continue
                answer = http(
                    "GET", f"{runner.api_url}/v1/messages/{message_id}/events", headers=headers
                )
                for event in answer.json()["events"]:
                    if event["type"] == "sent":
                        late[message_id] = int(event["detail"]["fired_late_ms"])
            if len(late) < len(ids):
                time.sleep(5)
        values = sorted(late.values())
        print(f"sent {len(values)} of {len(ids)} scheduled messages")
        if values:
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
            print(
                f"fired_late_ms: min {values[0]}, median {statistics.median(values):.0f}, "
                f"p99 {p99}, max {values[-1]}"
            )
            print("sorted:", json.dumps(values))
            print("in send order:", json.dumps([late.get(i) for i in ids]))
    finally:
        if runner is not None:
            kill(runner)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
