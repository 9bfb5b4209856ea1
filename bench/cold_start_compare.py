"""Cold start of this checkout against another (e.g. the commit before a change), interleaved.

Each sample is bench/cold_start.py's probe (a fresh interpreter imports one
function's app.py and handles its first event), run alternately for the
other checkout and this one, so both see the same machine load. Besides wall
time it reports the process's CPU time (user + system, from wait4), which a
busy machine disturbs far less than wall time.

    git archive BASE | tar -x -C /tmp/base
    .venv/bin/python bench/cold_start_compare.py --before /tmp/base [--samples 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for bench.cold_start

from bench import cold_start  # noqa: E402


def probe(repo: Path, name: str) -> tuple[float, float]:
    """(wall ms, CPU ms) of one cold start of ``name`` from ``repo``."""
    source = cold_start.PROBE.format(
        shared=str(repo / "shared"),
        repo=str(repo),
        app=str(repo / "functions" / name / "app.py"),
        event=cold_start.FIRST_EVENTS[name],
        path=cold_start.HEALTH_PATHS.get(name, ""),
        name=name,
    )
    environment = {**cold_start.environment(), "TEMPLATES_DIR": str(repo / "templates")}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", source],
        env=environment,
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = (time.perf_counter() - started) * 1000
    assert process.stdout is not None
    output = process.stdout.read().decode()
    process.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0 or "first_event_ms" not in output:
        raise RuntimeError(f"{repo} {name}: the probe failed")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--functions", nargs="*", default=list(cold_start.FIRST_EVENTS))
    args = parser.parse_args()
    cold_start.prepare_database()
    print(f"cold start, {args.samples} interleaved samples each, medians (ms)")
    print(
        f"{'function':<10} {'wall before':>12} {'wall after':>11} "
        f"{'CPU before':>11} {'CPU after':>10} {'CPU change':>11}"
    )
    for name in args.functions:
        before: list[tuple[float, float]] = []
        after: list[tuple[float, float]] = []
        for _ in range(args.samples):
            before.append(probe(args.before.resolve(), name))
            after.append(probe(REPO, name))
        wall_b, wall_a = (statistics.median(s[0] for s in runs) for runs in (before, after))
        cpu_b, cpu_a = (statistics.median(s[1] for s in runs) for runs in (before, after))
        print(
            f"{name:<10} {wall_b:>12.0f} {wall_a:>11.0f} {cpu_b:>11.0f} {cpu_a:>10.0f} "
            f"{(cpu_a / cpu_b - 1) * 100:>+10.1f}%"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
