"""When to try a message again after every provider failed: exponential backoff."""

from __future__ import annotations

from dataclasses import dataclass

# SQS refuses a visibility timeout above 12 hours.
SQS_MAX_VISIBILITY_SECONDS = 12 * 60 * 60


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base x 2^(n-1)`` seconds after the n-th failed attempt, capped.

    ``jitter`` scales each delay down by a random share of up to that
    fraction (``draw`` in [0, 1)), so messages that failed together do not
    all come back in the same second when a provider recovers.
    """

    base_seconds: int = 60
    cap_seconds: int = 3600
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")

    def delay_seconds(self, failed_attempts: int, draw: float = 0.0) -> int:
        exponent = max(failed_attempts, 1) - 1
        # Cap the exponent too, so a huge attempt count cannot overflow.
        raw = min(self.cap_seconds, self.base_seconds << min(exponent, 32))
        delay = round(raw * (1 - self.jitter * min(max(draw, 0.0), 1.0)))
        return max(0, min(delay, SQS_MAX_VISIBILITY_SECONDS))

    def schedule(self, attempts: int) -> list[int]:
        """The delays after attempts 1..attempts-1, without jitter: for docs and tests."""
        return [
            Backoff(self.base_seconds, self.cap_seconds).delay_seconds(n)
            for n in range(1, attempts)
        ]
