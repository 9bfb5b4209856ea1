"""Parsing inbound bounce mail (issue 16): median time per sample, target ≤ 2 ms.

Every captured sample in tests/fixtures/bounces is parsed by
``mailroom.domain.bounces.parse_bounce`` (stdlib DSN/ARF readers, flufl.bounce
as the fallback) after one warm-up each, which loads flufl.bounce once as a
warm function would have it loaded. Then the VERP check of the envelope
address, which every inbound mail pays too. Times are wall clock on a shared
machine: compare within one run.

    PYTHONPATH=shared .venv/bin/python bench/parse_dsn.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path

from mailroom.domain.bounces import parse_bounce
from mailroom.domain.return_path import SigningKeyring, match_return_path, verp_return_path

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "bounces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    rounds = parser.parse_args().rounds
    samples = sorted(FIXTURES.glob("*.eml"))
    every: list[float] = []
    print(f"{'sample':32} {'format':20} {'median ms':>10} {'p95 ms':>8}")
    for path in samples:
        raw = path.read_bytes()
        report = parse_bounce(raw)  # warm-up: flufl.bounce imported once
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            parse_bounce(raw)
            times.append((time.perf_counter() - started) * 1000)
        every += times
        times.sort()
        print(
            f"{path.name:32} {report.format.value:20} {statistics.median(times):10.3f} "
            f"{times[int(len(times) * 0.95)]:8.3f}"
        )
    every.sort()
    print(
        f"{'all samples':32} {'':20} {statistics.median(every):10.3f} "
        f"{every[int(len(every) * 0.95)]:8.3f}"
    )
    keyring = SigningKeyring.from_setting("k1:" + "A" * 43)
    address = verp_return_path(keyring, uuid.uuid4(), "bounces.example.com")
    started = time.perf_counter()
    for _ in range(10_000):
        match_return_path(keyring, [address])
    per = (time.perf_counter() - started) / 10_000 * 1000
    print(f"VERP signature check: {per:.4f} ms")


if __name__ == "__main__":
    main()
