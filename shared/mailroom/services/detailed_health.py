"""What an operator sees at GET /health/detailed, and what /ready decides on.

Down PostgreSQL or Redis makes Mailroom unavailable (nothing can be accepted
or sent). Everything else is reported, and makes it "degraded" at most: an
open breaker or an unreachable provider fails over, a backlog drains, a
schema behind the code is for the deploy to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.dependency_probes import (
    DependencyProbes,
    MigrationState,
    ProbeResult,
    queue_depth,
    timed,
)
from mailroom.adapters.metrics.base import Metrics
from mailroom.adapters.queue import sqs_client
from mailroom.config import Settings

SEND_QUEUE = "send"
DEAD_LETTER_QUEUE = "dead-letter"
CORE_DEPENDENCIES = ("postgres", "redis")


@dataclass(frozen=True, slots=True)
class QueueState:
    depth: int | None
    oldest_age_seconds: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderState:
    breaker: str | None
    reachable: ProbeResult


@dataclass(slots=True)
class DetailedHealth:
    dependencies: dict[str, ProbeResult]
    queues: dict[str, QueueState]
    providers: dict[str, ProviderState]
    migrations: MigrationState | None
    migrations_error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return all(
            self.dependencies[name].ok for name in CORE_DEPENDENCIES if name in self.dependencies
        )

    @property
    def status(self) -> Literal["ok", "degraded", "unavailable"]:
        if not self.available:
            return "unavailable"
        degraded = (
            any(not result.ok for result in self.dependencies.values())
            or any(queue.error for queue in self.queues.values())
            or any(
                state.breaker not in (None, "closed") or not state.reachable.ok
                for state in self.providers.values()
            )
            or self.migrations is None
            or not self.migrations.at_head
        )
        return "degraded" if degraded else "ok"


def measure_queues(
    settings: Settings, uow_backlog: Callable[[], float | None]
) -> dict[str, QueueState]:
    """Depth of the send queue and its DLQ (SQS), and the oldest unsent message's age (PostgreSQL).

    SQS does not say how old a queue's oldest message is (CloudWatch's
    ApproximateAgeOfOldestMessage does, in AWS): the send queue's age is the
    oldest message still queued or sending in PostgreSQL, which is what a
    customer waits on; the DLQ's is not known here.
    """
    states: dict[str, QueueState] = {}
    client = None
    for name, url in (
        (SEND_QUEUE, settings.queue_url),
        (DEAD_LETTER_QUEUE, settings.dead_letter_queue_url),
    ):
        age = uow_backlog() if name == SEND_QUEUE else None
        if not url:
            states[name] = QueueState(None, age, "not configured")
            continue
        try:
            client = client or sqs_client(settings.aws_region)
            states[name] = QueueState(queue_depth(client, url), age)
        except Exception as error:  # noqa: BLE001 - reported, not raised
            states[name] = QueueState(None, age, f"{type(error).__name__}: {error}"[:300])
    return states


def oldest_queued_age(uow_factory: Callable[[], UnitOfWork]) -> Callable[[], float | None]:
    """The age of the oldest unsent message, read when called (None if the database fails)."""

    def read() -> float | None:
        uow = uow_factory()
        try:
            with uow:
                oldest = uow.messages.oldest_unfinished_at()
        except Exception:  # noqa: BLE001 - reported as unknown
            return None
        if oldest is None:
            return 0.0
        return round((datetime.now(UTC) - oldest).total_seconds(), 1)

    return read


def check(
    *,
    settings: Settings,
    core_probes: dict[str, Callable[[], None]],
    probes: DependencyProbes,
    queue_age: Callable[[], float | None],
    breaker_states: Callable[[], dict[str, str]] | None,
    metrics: Metrics,
) -> DetailedHealth:
    """Every check, once; queue and breaker gauges are updated from what was seen."""
    dependencies = {name: timed(probe) for name, probe in core_probes.items()}
    queues = measure_queues(settings, queue_age)
    for name, queue in queues.items():
        metrics.queue_depth(name, queue.depth, queue.oldest_age_seconds)
    notes: list[str] = []
    try:
        breakers = breaker_states() if breaker_states is not None else {}
    except Exception as error:  # noqa: BLE001 - Redis down: reported beside it
        breakers = {}
        notes.append(f"breaker states unknown: {type(error).__name__}: {error}"[:300])
    providers: dict[str, ProviderState] = {}
    for name in settings.provider_names:
        state = breakers.get(name)
        if state is not None:
            metrics.breaker_state(name, state)
        providers[name] = ProviderState(state, probes.provider(name))
    migrations: MigrationState | None = None
    migrations_error: str | None = None
    try:
        migrations = probes.migrations()
    except Exception as error:  # noqa: BLE001 - reported
        migrations_error = f"{type(error).__name__}: {error}"[:300]
    return DetailedHealth(dependencies, queues, providers, migrations, migrations_error, notes)


def ready(
    core_probes: dict[str, Callable[[], None]], probes: DependencyProbes
) -> tuple[bool, dict[str, str]]:
    """Whether this instance should take traffic: PostgreSQL and Redis answer, schema at head."""
    checks: dict[str, str] = {}
    for name, probe in core_probes.items():
        result = timed(probe)
        checks[name] = "ok" if result.ok else f"error: {result.error}"
    try:
        state = probes.migrations()
        checks["migrations"] = (
            "ok"
            if state.at_head
            else f"behind: at {sorted(state.current)}, code has {sorted(state.heads)}"
        )
    except Exception as error:  # noqa: BLE001 - not ready
        checks["migrations"] = f"error: {type(error).__name__}: {error}"[:300]
    return all(value == "ok" for value in checks.values()), checks
