"""Issue 20's queue rules without I/O: bands, retry schedules, the claim gate's arithmetic."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from mailroom.adapters.claim_limits import ClaimRateLimiter, SendBucket
from mailroom.domain.errors import InvalidRequest
from mailroom.domain.queues import Band, BucketGrant, band_of, check_retry_delays, retry_delay


@pytest.mark.parametrize(
    ("priority", "band"),
    [
        (1, Band.LOW),
        (3, Band.LOW),
        (4, Band.NORMAL),
        (7, Band.NORMAL),
        (8, Band.HIGH),
        (10, Band.HIGH),
    ],
)
def test_priorities_map_onto_three_bands(priority: int, band: Band) -> None:
    assert band_of(priority) is band


@pytest.mark.parametrize("delays", [[30, 30], [120, 30], [0, 10], [30, 43_201], list(range(1, 12))])
def test_bad_retry_delays_are_refused(delays: list[int]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_retry_delays(delays)
    assert refused.value.details


def test_good_retry_delays_pass_and_the_last_repeats() -> None:
    check_retry_delays([30, 120, 600, 3600])
    check_retry_delays([])
    assert [retry_delay([30, 120], n) for n in (1, 2, 3, 9)] == [30, 120, 120, 120]


class CountingLimiter(ClaimRateLimiter):
    """Grants a fixed number of tokens once; records what was asked."""

    def __init__(self, tokens: int, wait: float) -> None:
        self.tokens = tokens
        self.wait = wait
        self.asked: list[tuple[list[str], int]] = []

    def take_up_to(self, buckets: Sequence[SendBucket], wanted: int) -> BucketGrant:
        self.asked.append(([b.name for b in buckets], wanted))
        granted = min(self.tokens, wanted)
        self.tokens -= granted
        return BucketGrant(granted, self.wait if granted < wanted else 0)


def test_the_limiter_is_asked_for_the_queue_and_the_client_bucket() -> None:
    from mailroom.adapters.db.queues import ClaimView
    from mailroom.domain.queues import QueueState
    from mailroom.services.queues import ClaimGate

    limiter = CountingLimiter(tokens=2, wait=4.2)
    gate = ClaimGate(limiter, client_sends_per_minute=30)
    client = uuid.uuid4()
    views = [ClaimView(uuid.uuid4(), client, "q1", QueueState.ACTIVE, 2, 60, "t") for _ in range(5)]
    buckets = gate._buckets(client, "q1", views[0])
    assert [b.name for b in buckets] == ["queue:q1", f"client:{client}"]
    assert [b.per_minute for b in buckets] == [60, 30]
