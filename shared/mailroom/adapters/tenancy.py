"""Shared state of the tenancy layer: token buckets, quota counters, credential versions.

Every API instance must see the same numbers, so these live in Redis
(``redis_tenancy.py``); unit tests subclass the interfaces with in-memory fakes.
Each method raises ``DependencyUnavailable`` when the store does not answer:
callers fail closed.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from mailroom.domain.tenancy import QuotaPeriod, RateDecision


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: ``per_minute`` tokens of capacity, refilled evenly over a minute.

    ``level`` says which tier it is (global, client, key): a refusal names it.
    """

    name: str
    per_minute: int
    level: str = "client"


class RateLimiter(abc.ABC):
    @abc.abstractmethod
    def take_all(self, buckets: Sequence[Bucket], *, cost: int = 1) -> RateDecision:
        """Take ``cost`` tokens (one a request; a batch's further items, issue 17)
        from every bucket atomically, in one round trip.

        Either every bucket gives them or none does. The decision
        describes the tightest bucket: the refusing one that takes longest
        to refill, or, when allowed, the one with the fewest tokens left.
        """

    def take(self, bucket: Bucket, *, shared: Bucket | None = None) -> RateDecision:
        return self.take_all([bucket] if shared is None else [bucket, shared])


@dataclass(frozen=True, slots=True)
class QuotaTake:
    accepted: bool
    used: int  # after this take when accepted; the count that refused it otherwise


class QuotaCounter(abc.ABC):
    @abc.abstractmethod
    def take(self, client_id: uuid.UUID, period: QuotaPeriod, limit: int) -> QuotaTake | None:
        """Count one message if the client is under ``limit``; None if the counter is unset.

        Check and increment are one atomic step, so concurrent takes at the
        edge accept exactly the remaining number.
        """

    @abc.abstractmethod
    def give_back(self, client_id: uuid.UUID, period: QuotaPeriod) -> None:
        """Undo one take whose message was not accepted after all (never below 0)."""

    def take_up_to(
        self, client_id: uuid.UUID, period: QuotaPeriod, limit: int, count: int
    ) -> tuple[int, int] | None:
        """Count up to ``count`` messages while under ``limit`` (a batch, issue 17).

        (how many were counted, the count after); None if the counter is
        unset. One atomic step in Redis; this default takes one at a time.
        """
        taken, used = 0, 0
        for _ in range(count):
            answer = self.take(client_id, period, limit)
            if answer is None:
                if taken:
                    break
                return None
            used = answer.used
            if not answer.accepted:
                break
            taken += 1
        return taken, used

    def give_back_many(self, client_id: uuid.UUID, period: QuotaPeriod, count: int) -> None:
        """Undo ``count`` takes (never below 0)."""
        for _ in range(count):
            self.give_back(client_id, period)

    @abc.abstractmethod
    def seed(self, client_id: uuid.UUID, period: QuotaPeriod, used: int) -> None:
        """Start an unset counter at ``used``; a counter that exists is left alone."""

    @abc.abstractmethod
    def read(self, client_id: uuid.UUID, period: QuotaPeriod) -> int | None: ...

    @abc.abstractmethod
    def replace(
        self, client_id: uuid.UUID, period: QuotaPeriod, *, expected: int | None, used: int
    ) -> bool:
        """Set the counter to ``used`` if it still reads ``expected``; whether it did."""


class CredentialVersions(abc.ABC):
    """An opaque version per API key that changes whenever the client's access does.

    Verified credentials are cached per instance together with the version
    they were verified under; a request whose version no longer matches is
    verified again against the database.
    """

    @abc.abstractmethod
    def read(self, api_key: str) -> str | None: ...

    @abc.abstractmethod
    def claim(self, api_key: str) -> str | None:
        """Give an unversioned key a fresh version and return it.

        None if the key got a version meanwhile: a change raced this
        verification, so its result must not be cached.
        """

    @abc.abstractmethod
    def bump(self, api_key: str) -> None:
        """A new, never-seen version: every cached verification of the key is stale."""
