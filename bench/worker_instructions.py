"""The worker's instructions per email: a figure that does not drift with the machine.

The rates and CPU times of the other worker benches move by tens of percent
from one minute to the next on a shared machine (docs/benchmarks.md, issue 8).
This runs ``bench/worker_profile.py`` under ``valgrind --tool=callgrind``
twice, with a short and a longer run of batches, and divides the difference
in instructions executed by the worker process by the difference in emails:
start-up, imports and the warm-up batch cancel out. Only the worker process
is counted (the sink, PostgreSQL and Redis are not). Paths that depend on
timing (the render deadline, the breaker's 1 s trust, SMTP idle checks) can
still make two runs differ a little; compare figures from runs on one tree
before trusting a difference under a few percent. About three minutes.
Prints a note and exits 0 where valgrind is not installed.

    .venv/bin/python bench/worker_instructions.py [--short 5] [--long 25]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCH_SIZE = 10
_TOTAL = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def instructions(batches: int, valgrind: str) -> int:
    """Instructions the worker process executed for ``batches`` (plus start-up)."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                str(REPO / "bench" / "worker_profile.py"),
                "--batches",
                str(batches),
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=900,
        )
        found = _TOTAL.search(out.read_text(errors="replace"))
    if found is None:
        raise SystemExit(f"callgrind wrote no summary for {batches} batches")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=5, help="batches in the short run")
    parser.add_argument("--long", type=int, default=25, help="batches in the long run")
    args = parser.parse_args()
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed: no instruction count (apt-get install valgrind)")
        return
    short, long = instructions(args.short, valgrind), instructions(args.long, valgrind)
    emails = (args.long - args.short) * BATCH_SIZE
    print(
        f"worker process under callgrind, bench/worker_profile.py with {args.long} "
        f"minus {args.short} batches of {BATCH_SIZE} ({emails} emails)"
    )
    print(f"instructions per email   {(long - short) / emails / 1e6:6.2f} M")


if __name__ == "__main__":
    main()
