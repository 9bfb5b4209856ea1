"""Per-client queues (issue 20): priority, pause and drain, retry schedule, rate limit.

A client's mail goes through one of its named queues; a send that names none
goes through the client's ``default`` queue, made on first use. Priorities
1-10 map onto three SQS bands (``Band``); the queue's state decides whether
its mail is sent (active), kept in PostgreSQL as ``held`` (paused), or sent
while new mail is refused (draining). No I/O here.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from mailroom.domain.errors import InvalidRequest

DEFAULT_QUEUE_NAME = "default"
MIN_PRIORITY = 1
MAX_PRIORITY = 10
DEFAULT_PRIORITY = 5
# A retry waits on SQS as the record's visibility timeout, which SQS caps at
# 12 hours.
MAX_RETRY_DELAY_SECONDS = 43_200
MAX_RETRY_DELAYS = 10
# Every retry is one more receive of the record; the send queues' redrive
# limit (maxReceiveCount 8 in template.yaml) leaves room for 7 attempts.
MAX_RETRIES = 6
# Seed C's schedule: the example the API shows.
EXAMPLE_RETRY_DELAYS = (30, 120, 600, 3600)
QUEUE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class QueueState(StrEnum):
    ACTIVE = "active"
    # New mail is accepted and held; nothing is sent until resume.
    PAUSED = "paused"
    # What the queue holds is sent; new mail is refused (409 queue_draining).
    DRAINING = "draining"


class Band(StrEnum):
    """The SQS queue a priority travels on; each has its own DLQ and concurrency."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


def band_of(priority: int) -> Band:
    """high 8-10, normal 4-7, low 1-3."""
    if priority >= 8:
        return Band.HIGH
    if priority >= 4:
        return Band.NORMAL
    return Band.LOW


def check_retry_delays(delays: Sequence[int]) -> None:
    """Strictly increasing, each 1 s to MAX_RETRY_DELAY_SECONDS; else 422."""
    problems: list[str] = []
    if len(delays) > MAX_RETRY_DELAYS:
        problems.append(f"at most {MAX_RETRY_DELAYS} delays")
    for index, delay in enumerate(delays):
        if delay < 1 or delay > MAX_RETRY_DELAY_SECONDS:
            problems.append(f"retry_delays.{index}: between 1 and {MAX_RETRY_DELAY_SECONDS} s")
        if index and delay <= delays[index - 1]:
            problems.append(f"retry_delays.{index}: must be longer than the one before")
    if problems:
        raise InvalidRequest(
            "; ".join(problems),
            details=[{"field": "retry_delays", "message": problem} for problem in problems],
        )


@dataclass(slots=True)
class Queue:
    id: uuid.UUID
    client_id: uuid.UUID
    name: str
    priority: int = DEFAULT_PRIORITY
    # Sends per minute the worker claims from this queue; None: no limit.
    rate_limit_per_minute: int | None = None
    # None: the service's MAX_SEND_ATTEMPTS - 1 and its exponential backoff.
    max_retries: int | None = None
    retry_delays: list[int] | None = None
    # Its mail is bulk (RFC 8058 List-Unsubscribe) unless a send says otherwise.
    bulk: bool = False
    state: QueueState = QueueState.ACTIVE
    # Issue 20 items 4-5 (another branch): the SMTP configuration its mail
    # uses, and a provider order; stored only, not yet used by the worker.
    smtp_config_id: uuid.UUID | None = None
    provider_order: list[str] | None = None
    # Issue 21: open and click tracking for its mail, under the template's
    # and the send's own choice; None: no default.
    tracking: tuple[tuple[str, bool], ...] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def band(self) -> Band:
        return band_of(self.priority)


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """A queue's own retries: how many, and the delay before each (the last repeats)."""

    max_retries: int | None
    delays: tuple[int, ...] | None


def retry_delay(queue_delays: Sequence[int], attempt: int) -> int:
    """The delay before retry ``attempt`` (1-based): the last one repeats."""
    if not queue_delays:
        return 0
    return int(queue_delays[min(attempt, len(queue_delays)) - 1])


@dataclass(frozen=True, slots=True)
class BucketGrant:
    """How many of the wanted tokens a rate-limit bucket gave, and when the next one is."""

    granted: int
    wait_seconds: float


def seconds_until(tokens_short: float, per_minute: int) -> int:
    """Whole seconds (at least 1) until a per-minute bucket has ``tokens_short`` more."""
    return max(1, math.ceil(tokens_short * 60 / per_minute))
