"""Fakes for the provider chain's interfaces: signals, a clock, the queue's records, the DLQ.

Each subclasses the real interface (tests/fakes.py holds the older ones).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailroom.adapters.breakers import ProviderBreakers
from mailroom.adapters.dead_letter_queue import DeadLetter, DeadLetterQueue
from mailroom.adapters.operator_signals import OperatorSignals, SignalKey
from mailroom.adapters.providers.base import EmailProvider
from mailroom.adapters.queue_records import QueueRecords
from mailroom.domain.errors import DeadLetterQueueUnavailable
from mailroom.services.provider_chain import ProviderChain


@dataclass(frozen=True)
class Signal:
    level: str  # "alarm" or "notice"
    key: SignalKey
    message: str
    dimensions: dict[str, str]
    context: dict[str, Any]
    counted: bool


@dataclass
class RecordingSignals(OperatorSignals):
    signals: list[Signal] = field(default_factory=list)

    def alarm(
        self,
        key: SignalKey,
        message: str,
        *,
        dimensions: Mapping[str, str],
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.signals.append(
            Signal("alarm", key, message, dict(dimensions), dict(context or {}), True)
        )

    def notice(
        self,
        key: SignalKey,
        message: str,
        *,
        dimensions: Mapping[str, str],
        context: Mapping[str, Any] | None = None,
        count: bool = True,
    ) -> None:
        self.signals.append(
            Signal("notice", key, message, dict(dimensions), dict(context or {}), count)
        )

    def keyed(self, key: SignalKey) -> list[Signal]:
        return [signal for signal in self.signals if signal.key is key]

    def breaker_states(self, provider: str) -> list[str]:
        """The states this provider's breaker moved to, as counted in the metric."""
        return [
            s.dimensions["state"]
            for s in self.keyed(SignalKey.BREAKER_STATE_CHANGED)
            if s.dimensions["provider"] == provider and s.counted
        ]


class ManualClock:
    """A clock the test moves: breaker cooldowns pass without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def memory_breakers(
    signals: OperatorSignals,
    clock: ManualClock | None = None,
    *,
    failure_threshold: int = 5,
    cooldown_seconds: float = 30.0,
    success_threshold: int = 3,
) -> ProviderBreakers:
    return ProviderBreakers.in_memory(
        signals,
        failure_threshold=failure_threshold,
        cooldown_seconds=cooldown_seconds,
        success_threshold=success_threshold,
        clock=clock or ManualClock(),
    )


def chain_of(
    *providers: EmailProvider,
    breakers: ProviderBreakers | None = None,
    signals: OperatorSignals | None = None,
) -> ProviderChain:
    """A chain over the given providers in that order, keyed by their names."""
    signals = signals or RecordingSignals()
    return ProviderChain(
        {provider.name: provider for provider in providers},
        [provider.name for provider in providers],
        breakers or memory_breakers(signals),
        signals,
    )


@dataclass
class FakeQueueRecords(QueueRecords):
    limit: int | None = 8
    refuse: bool = False
    postponed: list[tuple[str, int]] = field(default_factory=list)

    def postpone(self, receipt_handle: str, seconds: int) -> bool:
        if self.refuse:
            return False
        self.postponed.append((receipt_handle, seconds))
        return True

    def max_receive_count(self) -> int | None:
        return self.limit


@dataclass
class FakeDeadLetterQueue(DeadLetterQueue):
    letters: list[DeadLetter] = field(default_factory=list)
    hidden: set[str] = field(default_factory=set)
    queue_name: str = "mailroom-test-send-dlq"
    refuse: bool = False

    @property
    def name(self) -> str:
        return self.queue_name

    def add(self, message_id: uuid.UUID, trace_id: str | None, reason: str) -> None:
        if self.refuse:
            raise DeadLetterQueueUnavailable("the dead-letter queue failed: refused")
        sqs_id = str(uuid.uuid4())
        self.letters.append(
            DeadLetter(
                sqs_message_id=sqs_id,
                receipt_handle=f"rh-{sqs_id}",
                body=f'{{"message_id": "{message_id}"}}',
                message_id=message_id,
                trace_id=trace_id,
                reason=reason,
                sent_at=None,
            )
        )

    def receive(self, max_records: int, *, hide_seconds: int) -> list[DeadLetter]:
        visible = [x for x in self.letters if x.sqs_message_id not in self.hidden][:max_records]
        self.hidden.update(x.sqs_message_id for x in visible)
        return visible

    def release(self, letters: Sequence[DeadLetter]) -> None:
        self.hidden.difference_update(x.sqs_message_id for x in letters)

    def delete(self, letters: Sequence[DeadLetter]) -> None:
        gone = {x.sqs_message_id for x in letters}
        self.letters = [x for x in self.letters if x.sqs_message_id not in gone]
        self.hidden -= gone

    def approximate_count(self) -> int:
        return len(self.letters)
