"""The tracking consumer: drain the hit stream into PostgreSQL in batches (issue 21 item 3).

One drain reads up to ``batch_size`` entries at a time from the stream's
consumer group, judges and writes them in one transaction (services/tracking.py
``apply_hits``: a few statements per batch), then acknowledges them. An entry
is acknowledged only after its batch committed: a consumer that dies in
between leaves its entries pending, another takes them over after
``reclaim_after_seconds``, and the hits' ids make the second write a no-op.
An entry delivered ``max_deliveries`` times without success goes to the
dead-letter queue; one that is not a hit at all is logged and dropped.

The doorbell: when the stream is empty the drain silences it and reads once
more. A hit queued after that read rings again (adapters/redis_tracking.py),
one queued before it is read by it: none waits for the schedule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailroom.adapters.db.tracking import TrackingStore
from mailroom.domain.tracking import QueuedHit
from mailroom.services.tracking import TrackingConfig, apply_hits

log = logging.getLogger(__name__)


class StreamEntry(Protocol):
    @property
    def entry_id(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def deliveries(self) -> int: ...


class HitStream(Protocol):
    """The consumer's end of the hit queue (adapters/redis_tracking.py ``RedisHitQueue``)."""

    def read(self, consumer: str, count: int) -> Sequence[StreamEntry]: ...
    def reclaim(
        self, consumer: str, min_idle_seconds: float, count: int
    ) -> Sequence[StreamEntry]: ...
    def ack(self, entry_ids: Sequence[str]) -> None: ...
    def silence(self) -> None: ...


class DeadLetters(Protocol):
    def ring(self) -> None: ...
    def dead_letter(self, bodies: Sequence[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class DrainLimits:
    batch_size: int = 500
    # Stop starting batches after this long (the rest: the doorbell rings again).
    run_seconds: float = 50.0
    reclaim_after_seconds: float = 60.0
    max_deliveries: int = 5


@dataclass(slots=True)
class DrainReport:
    batches: int = 0
    entries: int = 0
    hits_written: int = 0
    events_written: int = 0
    unreadable: int = 0
    dead_lettered: int = 0
    # The run ended with entries left (its time was up): another drain was asked for.
    continued: bool = False
    durations_ms: list[float] = field(default_factory=list)


def drain(
    store: TrackingStore,
    stream: HitStream,
    config: TrackingConfig,
    *,
    consumer: str,
    limits: DrainLimits = DrainLimits(),
    dead_letters: DeadLetters | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> DrainReport:
    """Write what the stream holds; raise (entries left pending) if a batch cannot be written."""
    report = DrainReport()
    deadline = clock() + limits.run_seconds
    taken = stream.reclaim(consumer, limits.reclaim_after_seconds, limits.batch_size)
    if taken:
        retried = _dead_lettered(taken, limits, dead_letters, stream, report)
        try:
            _apply(store, stream, config, retried, report)
        except Exception:  # noqa: BLE001 - one bad entry must not hold the others back
            # The batch failed before: one entry at a time this time, so a
            # hit the database refuses stays pending (and reaches the
            # dead-letter queue) alone, and the rest are written.
            log.warning("a reclaimed batch failed again; writing its entries one by one")
            for entry in retried:
                try:
                    _apply(store, stream, config, [entry], report)
                except Exception:
                    log.exception("a tracking hit failed again", extra={"entry": entry.entry_id})
    silenced = False
    while True:
        entries = stream.read(consumer, limits.batch_size)
        if entries:
            silenced = False
            _apply(store, stream, config, entries, report)
            if clock() >= deadline:
                report.continued = True
                if dead_letters is not None:
                    dead_letters.ring()
                break
            continue
        if silenced:
            break
        # Empty: from now on a new hit rings again; one more read catches any
        # hit queued before the doorbell went quiet.
        stream.silence()
        silenced = True
    return report


def _dead_lettered(
    entries: Sequence[StreamEntry],
    limits: DrainLimits,
    dead_letters: DeadLetters | None,
    stream: HitStream,
    report: DrainReport,
) -> list[StreamEntry]:
    """Entries delivered too often go to the dead-letter queue; the rest are tried again."""
    poisoned = [entry for entry in entries if entry.deliveries > limits.max_deliveries]
    if poisoned and dead_letters is not None:
        dead_letters.dead_letter([entry.body.decode("utf-8", "replace") for entry in poisoned])
        stream.ack([entry.entry_id for entry in poisoned])
        report.dead_lettered += len(poisoned)
        log.error("tracking hits dead-lettered", extra={"entries": len(poisoned)})
        return [entry for entry in entries if entry.deliveries <= limits.max_deliveries]
    return list(entries)


def _apply(
    store: TrackingStore,
    stream: HitStream,
    config: TrackingConfig,
    entries: Sequence[StreamEntry],
    report: DrainReport,
) -> None:
    hits: list[QueuedHit] = []
    for entry in entries:
        try:
            hits.append(QueuedHit.decode(entry.body))
        except ValueError:
            # Nothing the tracking function wrote: dropped, not retried forever.
            report.unreadable += 1
            log.warning("unreadable tracking hit dropped", extra={"entry": entry.entry_id})
    started = time.perf_counter()
    written = apply_hits(store, config, hits)
    report.durations_ms.append((time.perf_counter() - started) * 1000)
    stream.ack([entry.entry_id for entry in entries])
    report.batches += 1
    report.entries += len(entries)
    report.hits_written += written.hits
    report.events_written += written.events
