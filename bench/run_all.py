"""``make bench``: run every benchmark script and append its figures to docs/benchmarks.md.

Each ``bench/<topic>.py`` is a standalone script that prints its own table;
this runner only adds the date, the machine (nproc, CPU model) and the exact
command to each section, so every recorded figure says where it came from.

    .venv/bin/python bench/run_all.py [topic ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "benchmarks.md"
# Each script bounds its own running time; this is only a backstop.
SCRIPT_TIMEOUT_SECONDS = 900


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def scripts(selected: list[str]) -> list[Path]:
    found = sorted(p for p in Path(__file__).parent.glob("*.py") if p.name != Path(__file__).name)
    found = [p for p in found if not p.name.startswith("_")]
    return [p for p in found if not selected or p.stem in selected]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="*", help="script names without .py (default: all)")
    args = parser.parse_args()
    machine = f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}"
    failures = 0
    for script in scripts(args.topics):
        command = f".venv/bin/python bench/{script.name}"
        print(f"== {command}", flush=True)
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_SECONDS,
            check=False,
        )
        print(done.stdout, end="")
        if done.returncode != 0:
            failures += 1
            print(done.stderr[-4000:], file=sys.stderr)
            continue
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with RESULTS.open("a", encoding="utf-8") as results:
            results.write(
                f"\n### {script.stem} — {stamp}\n\n"
                f"Machine: {machine}. Command: `{command}` (via `make bench`).\n\n"
                f"```\n{done.stdout.rstrip()}\n```\n"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
