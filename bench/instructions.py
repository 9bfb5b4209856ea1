"""Instructions per email (worker) and per request (API): figures the machine does not move.

The rates and times of the other benches move by tens of percent from one
minute to the next on a shared machine, and by more from one machine to the
next (docs/benchmarks.md, issue 8). This runs two benches under
``valgrind --tool=callgrind``, each twice, with a short and a longer run, and
divides the difference in instructions by the difference in work, so that
start-up, imports and warm-up cancel out:

- the worker: ``bench/worker_profile.py`` with 5 and 25 batches of 10 (its
  rows are written in the same process, so their inserts count too);
  ``worker-single`` and ``worker-batch`` (issue 17) write them in a child
  process, so those two figures are the worker's alone, on single sends and
  on one bulk batch's messages planned by the real planner;
- the send API: ``bench/api_send.py --whole-only`` with 100 and 600 warm
  ``POST /v1/send`` requests through the resolver.

Only the benchmark's own process is counted (the SMTP sink, PostgreSQL and
Redis are not), and time spent waiting on a socket costs no instructions: the
API's round trips show in its self-time, not here. Paths that depend on
timing (the render deadline, the breaker's 1 s trust, SMTP idle checks) can
still make two runs differ a little; compare figures from runs on one tree
before trusting a difference under a few percent. About five minutes. Prints
a note and exits 0 where valgrind is not installed.

    .venv/bin/python bench/instructions.py [worker] [api] [--observability both]
    PYTHONHASHSEED=0 .venv/bin/python bench/instructions.py worker-single worker-batch

``--observability both`` runs each subject with metrics and tracing off, then
on (bench/_observability.py), and prints what they cost (issue 23).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_TOTAL = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Subject:
    """A bench script whose instructions grow with ``units`` of work."""

    label: str
    unit: str
    script: str
    # The command-line arguments that make the script do this many units.
    arguments: tuple[str, ...]
    units_per_step: int
    short: int
    long: int

    def argv(self, steps: int) -> list[str]:
        return [str(REPO / "bench" / self.script), *self.arguments, str(steps)]


SUBJECTS = {
    "worker": Subject(
        "worker process, bench/worker_profile.py",
        "email",
        "worker_profile.py",
        ("--batches",),
        units_per_step=10,
        short=5,
        long=25,
    ),
    # Issue 16: the same with every message DKIM-signed (one RSA-2048 signature).
    "worker-dkim": Subject(
        "worker process, worker_profile.py --dkim",
        "email",
        "worker_profile.py",
        ("--dkim", "--batches"),
        units_per_step=10,
        short=5,
        long=25,
    ),
    # Issue 20: the worker without the claim gate (as before), and with every check.
    # Issue 21 item 3: one pixel request through the tracking function's handler.
    "pixel": Subject(
        "tracking function, bench/tracking.py --pixels-only",
        "request",
        "tracking.py",
        ("--pixels-only", "--hits"),
        units_per_step=1,
        short=200,
        long=1200,
    ),
    "worker-ungated": Subject(
        "worker process, worker_profile.py --gate none",
        "email",
        "worker_profile.py",
        ("--gate", "none", "--batches"),
        units_per_step=10,
        short=5,
        long=25,
    ),
    "worker-gated": Subject(
        "worker process, worker_profile.py --gate all",
        "email",
        "worker_profile.py",
        ("--gate", "all", "--batches"),
        units_per_step=10,
        short=5,
        long=25,
    ),
    # Issue 17: the worker on one bulk batch's messages, as the planner writes
    # them, against the same worker on single sends. Both write their rows in
    # a child process (--prepare-apart), so each figure is the worker alone;
    # "worker" above also counts the single-send inserts, so compare
    # worker-batch with worker-single, not with it.
    "worker-single": Subject(
        "worker process, worker_profile.py --prepare-apart",
        "email",
        "worker_profile.py",
        ("--prepare-apart", "--batches"),
        units_per_step=10,
        short=5,
        long=25,
    ),
    "worker-batch": Subject(
        "worker process, worker_profile.py --rows batch",
        "email",
        "worker_profile.py",
        ("--rows", "batch", "--prepare-apart", "--batches"),
        units_per_step=10,
        short=5,
        long=25,
    ),
    "api": Subject(
        "send API, bench/api_send.py --whole-only",
        "request",
        "api_send.py",
        ("--whole-only", "--requests"),
        units_per_step=1,
        short=100,
        long=600,
    ),
}


def instructions(argv: list[str], valgrind: str, env: dict[str, str] | None = None) -> int:
    """Instructions the Python process running ``argv`` executed, start-up included."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        run = subprocess.run(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, *argv],
            cwd=REPO,
            check=False,
            capture_output=True,
            timeout=900,
            env={**os.environ, **(env or {})},
        )
        if run.returncode != 0:
            # The bench's own complaint (a message not sent, say), not valgrind's chatter.
            said = [
                line
                for line in run.stderr.decode(errors="replace").splitlines()
                if not line.startswith("==")
            ]
            raise SystemExit(f"{' '.join(argv)} exited {run.returncode}: " + "\n".join(said[-15:]))
        found = _TOTAL.search(out.read_text(errors="replace"))
    if found is None:
        raise SystemExit(f"callgrind wrote no summary for {argv}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subjects", nargs="*", help=f"any of {', '.join(SUBJECTS)} (default: all)")
    parser.add_argument(
        "--observability",
        choices=("default", "both", "off", "on"),
        default="default",
        help="both: each subject with metrics and tracing off, then on (issue 23)",
    )
    args = parser.parse_args()
    unknown = set(args.subjects) - set(SUBJECTS)
    if unknown:
        parser.error(f"no such subject: {', '.join(sorted(unknown))}")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed: no instruction count (apt-get install valgrind)")
        return
    modes = {"default": ("default",), "both": ("off", "on")}.get(
        args.observability, (args.observability,)
    )
    print(f"{'under callgrind':<46}{'steps':>12}{'M instructions':>16}")
    for name in args.subjects or SUBJECTS:
        subject = SUBJECTS[name]
        figures: dict[str, float] = {}
        for mode in modes:
            env = {} if mode == "default" else {"MAILROOM_BENCH_OBSERVABILITY": mode}
            short = instructions(subject.argv(subject.short), valgrind, env)
            long = instructions(subject.argv(subject.long), valgrind, env)
            units = (subject.long - subject.short) * subject.units_per_step
            figures[mode] = per_unit = (long - short) / units / 1e6
            steps = f"{subject.long}-{subject.short}"
            label = subject.label if mode == "default" else f"{subject.label}, obs. {mode}"
            print(f"{label:<46}{steps:>12}{per_unit:>9.2f} /{subject.unit}")
        if "on" in figures and "off" in figures:
            extra = (figures["on"] - figures["off"]) / figures["off"] * 100
            print(f"{'  metrics + tracing cost':<46}{'':>12}{extra:>+8.1f} %")


if __name__ == "__main__":
    main()
