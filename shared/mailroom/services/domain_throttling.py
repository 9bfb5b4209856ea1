"""Holding mail to a recipient domain group within its rate, and slowing down when told to.

Called by the worker around each send (services/delivery.py). The sender
whose rate it is: the client's relay when the message goes through one
(``smtp-config:<id>``), else the From domain (``domain:<name>``). The
ceiling: the relay's own for that group, else THROTTLE_PER_MINUTE's.

A message over its group's rate is put back with the bucket's delay: not
sent, not failed, not counted as an attempt. A refusal that asks to slow
down (421, or 4.7.x) halves the group's rate (domain/throttling.py).
"""

from __future__ import annotations

from mailroom.adapters.domain_throttle import DomainThrottle
from mailroom.adapters.providers.client_relays import Relay
from mailroom.domain.mime import from_domain
from mailroom.domain.model import Message
from mailroom.domain.throttling import (
    DomainGroup,
    ThrottleDecision,
    asks_to_slow_down,
    group_of,
)
from mailroom.services.provider_chain import ChainResult


def sender_of(message: Message, relay: Relay | None) -> str:
    return relay.name if relay is not None else f"domain:{from_domain(message)}"


def groups_of(message: Message) -> list[DomainGroup]:
    """The distinct groups of the message's recipients, in the order they appear."""
    return list(dict.fromkeys(group_of(a) for a in (*message.to, *message.cc, *message.bcc)))


def _ceiling(throttle: DomainThrottle, group: DomainGroup, relay: Relay | None) -> int | None:
    overrides = relay.config.throttle_per_minute if relay is not None else None
    return throttle.policy.ceiling(group, overrides)


def admit(throttle: DomainThrottle, message: Message, relay: Relay | None) -> ThrottleDecision:
    """Allowed, or the longest wait among the message's groups."""
    sender = sender_of(message, relay)
    domain = from_domain(message)
    held: ThrottleDecision | None = None
    for group in groups_of(message):
        decision = throttle.take(
            sender, group, ceiling=_ceiling(throttle, group, relay), from_domain=domain
        )
        if not decision.allowed and (
            held is None or decision.retry_after_seconds > held.retry_after_seconds
        ):
            held = ThrottleDecision(
                False, decision.retry_after_seconds, f"{group.value}: {decision.reason}"
            )
    return held or ThrottleDecision(True)


def observe(
    throttle: DomainThrottle, message: Message, relay: Relay | None, result: ChainResult
) -> list[tuple[DomainGroup, float]]:
    """After a send: each group whose rate a "slow down" refusal cut, with its new rate."""
    if result.receipt is not None and not result.failures:
        return []
    if not any(asks_to_slow_down(failure.message) for failure in result.failures):
        return []
    sender = sender_of(message, relay)
    cut: list[tuple[DomainGroup, float]] = []
    for group in groups_of(message):
        ceiling = _ceiling(throttle, group, relay)
        if ceiling is None:
            continue  # no ceiling configured: nothing to climb back to
        rate = throttle.slow_down(sender, group, ceiling=ceiling)
        if rate is not None:
            cut.append((group, rate))
    return cut
