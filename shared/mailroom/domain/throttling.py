"""Per-recipient-domain throttling and warm-up (issue 20, item 5): the rules, no I/O.

Mailbox providers throttle each sender per receiving domain, and several
domains are one provider: Gmail's limits cover googlemail.com too. A
recipient's domain therefore maps to a *group*, and ceilings are per
(sender, group), where the sender is the relay the mail goes through or,
without one, the From domain.

The rate a group is sent at follows AIMD, as TCP's congestion window
does: a deferral that says "slow down" (``421``, or an enhanced status
``4.7.x`` such as Gmail's ``421 4.7.28``) halves the current rate (never
below a floor), and every minute without one adds a fixed step back,
up to the configured ceiling.

Warm-up (optional): a new sending domain's reputation is built by
volume growing day by day, e.g. 50 a day per group, doubled daily up to a
target; day 0 is the first day the sender was seen.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum


class DomainGroup(StrEnum):
    GMAIL = "gmail"
    OUTLOOK = "outlook"
    YAHOO = "yahoo"
    OTHER = "other"


# The domains each group names; anything else is OTHER (its own bucket per
# sender, shared by all other domains: a per-domain bucket for every
# domain on the internet would grow Redis without bound).
GROUP_DOMAINS: dict[str, DomainGroup] = {
    "gmail.com": DomainGroup.GMAIL,
    "googlemail.com": DomainGroup.GMAIL,
    "outlook.com": DomainGroup.OUTLOOK,
    "hotmail.com": DomainGroup.OUTLOOK,
    "live.com": DomainGroup.OUTLOOK,
    "msn.com": DomainGroup.OUTLOOK,
    "yahoo.com": DomainGroup.YAHOO,
    "aol.com": DomainGroup.YAHOO,
    "ymail.com": DomainGroup.YAHOO,
}
# Country variants: hotmail.co.uk, yahoo.fr, outlook.de...
_PREFIX_GROUPS: tuple[tuple[str, DomainGroup], ...] = (
    ("hotmail.", DomainGroup.OUTLOOK),
    ("outlook.", DomainGroup.OUTLOOK),
    ("live.", DomainGroup.OUTLOOK),
    ("yahoo.", DomainGroup.YAHOO),
)


def group_of(address_or_domain: str) -> DomainGroup:
    domain = address_or_domain.rpartition("@")[2].strip().strip(">").lower().rstrip(".")
    found = GROUP_DOMAINS.get(domain)
    if found is not None:
        return found
    for prefix, group in _PREFIX_GROUPS:
        if domain.startswith(prefix):
            return group
    return DomainGroup.OTHER


# "421 ..." anywhere a reply is quoted, or an enhanced status code 4.7.x.
_SLOW_DOWN = re.compile(r"(?<![0-9.])(?:421(?![0-9.])|4\.7\.[0-9]{1,3})")


def asks_to_slow_down(reply: str) -> bool:
    """Whether an SMTP refusal is a rate deferral (421, or 4.7.x), not a mailbox problem."""
    return bool(_SLOW_DOWN.search(reply))


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Ceilings per group (per minute), AIMD's numbers and the warm-up schedule."""

    per_minute: dict[DomainGroup, int] = field(default_factory=dict)
    # AIMD: the rate is multiplied by this on a deferral...
    decrease_factor: float = 0.5
    # ...and grows by ``increase_step`` per minute without one...
    increase_step: float = 10.0
    # ...never under this (a trickle still probes whether the limit is lifted).
    floor_per_minute: float = 1.0
    # Warm-up: None is off; else day 0's volume per group, doubled daily, up to the target.
    warmup_start_per_day: int | None = None
    warmup_target_per_day: int = 100_000

    def ceiling(self, group: DomainGroup, overrides: dict[str, int] | None = None) -> int | None:
        """The ceiling for ``group``: the relay's own, else the service's; None: none."""
        if overrides and group.value in overrides:
            return overrides[group.value]
        return self.per_minute.get(group)

    def warmup_cap(self, days_since_first_send: int) -> int | None:
        """How many may go to one group today; None when warm-up is off or over."""
        if self.warmup_start_per_day is None:
            return None
        days = max(0, days_since_first_send)
        if days >= 40 or self.warmup_start_per_day << days >= self.warmup_target_per_day:
            return None
        return self.warmup_start_per_day << days

    def decreased(self, rate: float) -> float:
        return max(self.floor_per_minute, rate * self.decrease_factor)

    def recovered(self, rate: float, ceiling: float, minutes: float) -> float:
        return min(ceiling, rate + self.increase_step * max(0.0, minutes))


@dataclass(frozen=True, slots=True)
class ThrottleDecision:
    allowed: bool
    # Not allowed: when to try again (the visibility delay to put it back with).
    retry_after_seconds: int = 0
    reason: str = ""


def seconds_for_one(rate_per_minute: float) -> float:
    return 60.0 / rate_per_minute if rate_per_minute > 0 else math.inf


def parse_ceilings(value: str) -> dict[DomainGroup, int]:
    """``"gmail=600,outlook=300,other=1200"`` (THROTTLE_PER_MINUTE) → ceilings; ValueError."""
    ceilings: dict[DomainGroup, int] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        name, sep, number = entry.partition("=")
        if not sep:
            raise ValueError(f"{entry!r}: each entry is <group>=<per minute>")
        group = DomainGroup(name.strip())
        count = int(number)
        if count < 1:
            raise ValueError(f"{entry!r}: a ceiling is at least 1 a minute")
        ceilings[group] = count
    return ceilings
