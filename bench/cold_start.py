"""Cold start per function: a fresh interpreter until its first event is handled.

Each sample is a new ``python`` process that imports ``functions/<name>/app.py``
(with ``shared/`` on sys.path, as the layer would be) and hands it one
canonical event. Prints import time and first-invocation time (median and
max over the samples), then the heaviest imports of each function from
``python -X importtime``.

Needs PostgreSQL and Redis on 127.0.0.1 (the first invocations touch them).

    .venv/bin/python bench/cold_start.py [--samples 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_DATABASE = "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench"

# Which canonical event each function handles first. The send event carries
# placeholder credentials, so it exercises auth (one argon2 verify) and 401s.
FIRST_EVENTS = {
    "send": "send/send-welcome",
    "status": "status/health",
    "webhooks": "status/health",
    "admin": "status/health",
    "worker": "worker/sqs-batch",
}

PROBE = r"""
import importlib.util, json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {shared!r}); sys.path.insert(0, {repo!r})
spec = importlib.util.spec_from_file_location("app", {app!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
t1 = time.perf_counter()
from tests.events import FakeLambdaContext, load_event
event = load_event({event!r})
if {path!r}:
    event["path"] = event["resource"] = {path!r}
module.handler(event, FakeLambdaContext({name!r}))
t2 = time.perf_counter()
print(json.dumps({{"import_ms": (t1 - t0) * 1000, "first_event_ms": (t2 - t1) * 1000}}))
"""

HEALTH_PATHS = {"webhooks": "/webhooks/health", "admin": "/admin/health"}


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=BENCH_DATABASE,
        REDIS_URL="redis://127.0.0.1:6379/9",
        QUEUE_URL="http://127.0.0.1:9/000000000000/none",
        TEMPLATES_DIR=str(REPO / "templates"),
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="us-east-1",
        SMTP_PORT="9",
        # As template.yaml's Globals set it (the worker then loads no boto3).
        SEND_QUEUE_MAX_RECEIVE_COUNT="8",
        # Required by template.yaml: compiled code is shared through Redis.
        TEMPLATE_CODE_SIGNING_KEY="bench-template-code-signing-key-0123456789",
        POWERTOOLS_LOG_LEVEL="ERROR",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    return env


def prepare_database() -> None:
    sys.path.insert(0, str(REPO / "shared"))
    from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head

    ensure_database_exists(BENCH_DATABASE)
    upgrade_to_head(BENCH_DATABASE)


def probe_source(name: str) -> str:
    return PROBE.format(
        shared=str(REPO / "shared"),
        repo=str(REPO),
        app=str(REPO / "functions" / name / "app.py"),
        event=FIRST_EVENTS[name],
        path=HEALTH_PATHS.get(name, ""),
        name=name,
    )


def sample(name: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", probe_source(name)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    last_line = done.stdout.strip().splitlines()[-1]
    return dict(json.loads(last_line))


IMPORT_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def heaviest_imports(name: str, top: int = 8) -> list[tuple[str, float]]:
    """Packages by the import time spent in their own modules (``-X importtime`` self time)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe_source(name)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    own_time: dict[str, float] = {}
    for match in IMPORT_LINE.finditer(done.stderr):
        package = match.group(4).split(".")[0]
        own_time[package] = own_time.get(package, 0.0) + int(match.group(1)) / 1000
    return sorted(own_time.items(), key=lambda item: -item[1])[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--functions", nargs="*", default=list(FIRST_EVENTS))
    args = parser.parse_args()
    prepare_database()

    print(f"cold start, {args.samples} fresh interpreters per function (ms)")
    print(
        f"{'function':<10} {'import med':>11} {'import max':>11} {'1st event med':>14} "
        f"{'total med':>10} {'total max':>10}"
    )
    for name in args.functions:
        runs = [sample(name) for _ in range(args.samples)]
        imports = [run["import_ms"] for run in runs]
        firsts = [run["first_event_ms"] for run in runs]
        totals = [a + b for a, b in zip(imports, firsts, strict=True)]
        print(
            f"{name:<10} {statistics.median(imports):>11.0f} {max(imports):>11.0f} "
            f"{statistics.median(firsts):>14.0f} {statistics.median(totals):>10.0f} "
            f"{max(totals):>10.0f}"
        )
    print("\nimport time by package, in its own modules (ms, one -X importtime run)")
    for name in args.functions:
        heavy = ", ".join(f"{package} {ms:.0f}" for package, ms in heaviest_imports(name))
        print(f"{name:<10} {heavy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
