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

from collections.abc import Sequence

from mailroom.adapters.domain_throttle import DomainThrottle, ThrottleRequest
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

_ALLOWED = ThrottleDecision(True)


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
    return admit_batch(throttle, [(message, relay)])[0]


def admit_batch(
    throttle: DomainThrottle, items: Sequence[tuple[Message, Relay | None]]
) -> list[ThrottleDecision]:
    """``admit`` for each (message, relay), in one round trip to Redis."""
    requests: list[ThrottleRequest] = []
    owners: list[int] = []
    for index, (message, relay) in enumerate(items):
        sender, domain = sender_of(message, relay), from_domain(message)
        for group in groups_of(message):
            ceiling = _ceiling(throttle, group, relay)
            requests.append(ThrottleRequest(sender, group, ceiling, domain))
            owners.append(index)
    decisions = [_ALLOWED] * len(items)
    for owner, request, decision in zip(
        owners, requests, throttle.take_many(requests), strict=True
    ):
        held = decisions[owner]
        if not decision.allowed and (
            held.allowed or decision.retry_after_seconds > held.retry_after_seconds
        ):
            decisions[owner] = ThrottleDecision(
                False, decision.retry_after_seconds, f"{request.group.value}: {decision.reason}"
            )
    return decisions


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
