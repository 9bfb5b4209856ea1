"""One circuit breaker per provider, with its state in Redis so every worker shares it.

pybreaker keeps the state machine (closed → open after ``fail_max`` consecutive
failures → half-open once ``reset_timeout`` has passed → closed after
``success_threshold`` successes, or open again on a failure). Mailroom's
settings name the same three numbers after the seeds:

    BREAKER_FAILURE_THRESHOLD  → fail_max
    BREAKER_COOLDOWN_SECONDS   → reset_timeout
    BREAKER_SUCCESS_THRESHOLD  → success_threshold

Two things are ours rather than pybreaker's:

* The chain asks ``allows()`` before sending and reports the outcome after,
  instead of wrapping the send in ``breaker.call``. pybreaker counts every
  call that returns, or raises an excluded exception, as a success; a
  permanent or configuration failure must leave the breaker untouched, so
  only transient failures and real sends are reported.
* ``opened_at`` is stored as float seconds from an injectable clock.
  pybreaker's Redis storage keeps whole seconds, which makes a cooldown up
  to a second short, and its clock cannot be driven by tests.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pybreaker
import redis
from redis.exceptions import RedisError

from mailroom.adapters.operator_signals import OperatorSignals, SignalKey

Clock = Callable[[], float]
log = logging.getLogger(__name__)

REDIS_NAMESPACE = "mailroom:breaker"


class ClockedRedisStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage with ``opened_at`` as float seconds of our clock."""

    def __init__(self, redis_client: redis.Redis, namespace: str, clock: Clock) -> None:
        # pybreaker reads the state back as bytes and decodes it itself: a
        # client made with decode_responses=True breaks it (STACK-NOTES).
        super().__init__(pybreaker.STATE_CLOSED, redis_client, namespace=namespace)
        self._client = redis_client
        self._clock = clock
        self._opened_key = f"{namespace}:opened_at_seconds"

    @property
    def opened_at(self) -> datetime | None:
        seconds = self.opened_at_seconds()
        return None if seconds is None else datetime.fromtimestamp(seconds, UTC)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        # Two workers may trip the breaker at once; either time will do, so a
        # plain SET is enough (pybreaker's own storage keeps the later one).
        try:
            self._client.set(self._opened_key, repr(self._clock()))
        except RedisError:
            log.exception("recording when the breaker opened failed")

    def opened_at_seconds(self) -> float | None:
        try:
            raw = self._client.get(self._opened_key)
        except RedisError:
            log.exception("reading when the breaker opened failed")
            return None
        return float(raw) if raw is not None else None


class ClockedMemoryStorage(pybreaker.CircuitMemoryStorage):
    """In-process state with the same clock: for unit tests and single-process tools."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock
        self._opened_seconds: float | None = None

    @property
    def opened_at(self) -> datetime | None:
        seconds = self._opened_seconds
        return None if seconds is None else datetime.fromtimestamp(seconds, UTC)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        self._opened_seconds = self._clock()

    def opened_at_seconds(self) -> float | None:
        return self._opened_seconds


Storage = ClockedRedisStorage | ClockedMemoryStorage
StorageFactory = Callable[[str], Storage]


class ProviderBreakers:
    """The breakers of every provider, made on first use and kept for the process."""

    def __init__(
        self,
        storage: StorageFactory,
        signals: OperatorSignals,
        *,
        failure_threshold: int,
        cooldown_seconds: float,
        success_threshold: int,
        clock: Clock = time.time,
    ) -> None:
        self._storage = storage
        self._signals = signals
        self._failure_threshold = failure_threshold
        self._cooldown = cooldown_seconds
        self._success_threshold = success_threshold
        self._clock = clock
        self._breakers: dict[str, tuple[pybreaker.CircuitBreaker, Storage]] = {}
        self._lock = threading.Lock()

    @classmethod
    def in_redis(
        cls,
        redis_url: str,
        signals: OperatorSignals,
        *,
        failure_threshold: int,
        cooldown_seconds: float,
        success_threshold: int,
        clock: Clock = time.time,
    ) -> ProviderBreakers:
        # Its own bytes-mode client with short timeouts: a slow Redis must
        # not hold every send for long (and breakers fail open, see allows).
        client = redis.Redis.from_url(
            redis_url, decode_responses=False, socket_connect_timeout=1, socket_timeout=1
        )
        return cls(
            lambda name: ClockedRedisStorage(client, f"{REDIS_NAMESPACE}:{name}", clock),
            signals,
            failure_threshold=failure_threshold,
            cooldown_seconds=cooldown_seconds,
            success_threshold=success_threshold,
            clock=clock,
        )

    @classmethod
    def in_memory(
        cls,
        signals: OperatorSignals,
        *,
        failure_threshold: int,
        cooldown_seconds: float,
        success_threshold: int,
        clock: Clock = time.time,
    ) -> ProviderBreakers:
        return cls(
            lambda name: ClockedMemoryStorage(clock),
            signals,
            failure_threshold=failure_threshold,
            cooldown_seconds=cooldown_seconds,
            success_threshold=success_threshold,
            clock=clock,
        )

    def state(self, provider: str) -> str:
        """closed, open or half-open, as every instance sees it."""
        entry = self._entry(provider)
        return entry[0].current_state if entry else pybreaker.STATE_CLOSED

    def allows(self, provider: str) -> bool:
        """Whether a send may go to ``provider`` now: closed, half-open, or cooled down.

        An open breaker whose cooldown has passed turns half-open here, so the
        next sends are its trial calls.
        """
        entry = self._entry(provider)
        if entry is None:
            return True  # no Redis: fail open, the chain's order still applies
        breaker, storage = entry
        # Reading .state (not .current_state) also brings this instance's
        # cached state up to date, so its listeners hear of changes made by
        # other workers.
        if breaker.state.name != pybreaker.STATE_OPEN:
            return True
        opened = storage.opened_at_seconds()
        if opened is not None and self._clock() < opened + self._cooldown:
            return False
        breaker.half_open()
        return True

    def record_failure(self, provider: str, error: Exception) -> None:
        """A transient failure: counts toward opening (or reopens a half-open breaker)."""
        entry = self._entry(provider)
        if entry is None:
            return
        try:
            entry[0].call(_raise, error)
        except pybreaker.CircuitBreakerError:
            pass  # opened meanwhile by another worker: nothing to count
        except Exception as raised:
            # pybreaker re-raises the error we handed it; anything else is real.
            if raised is not error:
                raise

    def record_success(self, provider: str) -> None:
        """A send went through: resets the failure count, or counts toward closing."""
        entry = self._entry(provider)
        if entry is None:
            return
        # CircuitBreakerError: opened meanwhile by another worker.
        with contextlib.suppress(pybreaker.CircuitBreakerError):
            entry[0].call(_succeed)

    def _entry(self, provider: str) -> tuple[pybreaker.CircuitBreaker, Storage] | None:
        with self._lock:
            entry = self._breakers.get(provider)
            if entry is not None:
                return entry
            try:
                storage = self._storage(provider)
            except RedisError:
                log.exception("the %s breaker has no state store; sending without it", provider)
                return None
            breaker = pybreaker.CircuitBreaker(
                fail_max=self._failure_threshold,
                reset_timeout=self._cooldown,
                success_threshold=self._success_threshold,
                state_storage=storage,
                listeners=[_StateChangeListener(provider, self._signals)],
                name=provider,
                # The trip raises the provider's own error, so the attempt is
                # recorded with what really went wrong.
                throw_new_error_on_trip=False,
            )
            self._breakers[provider] = (breaker, storage)
            return breaker, storage


class _StateChangeListener(pybreaker.CircuitBreakerListener):
    def __init__(self, provider: str, signals: OperatorSignals) -> None:
        self._provider = provider
        self._signals = signals

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        # Every instance notices a change the first time it reads the shared
        # state, and pybreaker tells its listeners each time. The instance
        # that made the change calls us before writing the new state to
        # Redis; the others after. Only the first counts in the metric, so a
        # trip shows once however many workers are running.
        made_here = cb.current_state != new_state.name
        old = old_state.name if old_state else "unknown"
        self._signals.notice(
            SignalKey.BREAKER_STATE_CHANGED,
            f"circuit breaker for {self._provider}: {old} -> {new_state.name}",
            dimensions={"provider": self._provider, "state": new_state.name},
            context={"previous_state": old, "observed_only": not made_here},
            count=made_here,
        )


def _raise(error: Exception) -> None:
    raise error


def _succeed() -> None:
    return None
