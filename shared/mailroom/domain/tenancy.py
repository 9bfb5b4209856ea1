"""Keys, rate decisions, quota periods and audit entries: tenancy's values, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailroom.domain.model import Client


class KeyKind(StrEnum):
    """What a key pair is for; the key id's prefix says it at a glance."""

    LIVE = "live"
    # Reserved for sandbox clients (a later issue): refused at creation today.
    TEST = "test"

    @property
    def prefix(self) -> str:
        return f"mr_{self.value}_"


class Scope(StrEnum):
    """What a key may do (issue 15, seed C's scopes); every /v1 route declares one."""

    EMAIL_SEND = "email:send"
    EMAIL_READ = "email:read"
    QUEUE_MANAGE = "queue:manage"
    SMTP_MANAGE = "smtp:manage"
    ANALYTICS_READ = "analytics:read"
    SUPPRESSION_MANAGE = "suppression:manage"
    WEBHOOK_MANAGE = "webhook:manage"
    TEMPLATE_MANAGE = "template:manage"
    # Issue 18: recurring schedules (/v1/schedules).
    SCHEDULE_MANAGE = "schedule:manage"
    # Every scope, and the key self-management routes.
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling a /v1 route: the client (the tenant), through which key, allowed what.

    ``mode`` is the key's: a TEST caller's mail goes through everything a live
    one does but is never handed to a real provider (issue 15, item 2).
    """

    client: Client
    key_id: str
    scopes: frozenset[Scope]
    mode: KeyKind = KeyKind.LIVE

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


# A key id is the prefix and 12 random bytes in hex; a secret is 32 random
# bytes in URL-safe base64 (43 characters). Anything else cannot be ours, so it
# is refused without touching Redis, the database or argon2.
API_KEY_PATTERN = re.compile(r"mr_(?:live|test)_[0-9a-f]{24}")
API_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def well_formed(api_key: str, api_secret: str) -> bool:
    return bool(API_KEY_PATTERN.fullmatch(api_key) and API_SECRET_PATTERN.fullmatch(api_secret))


@dataclass(frozen=True, slots=True)
class RateDecision:
    """One answer of a token bucket, in the units the X-RateLimit headers use."""

    allowed: bool
    limit: int  # the bucket's capacity: requests per minute
    remaining: int  # whole tokens left after this request
    reset_seconds: int  # until the bucket is full again
    retry_after_seconds: int  # until one token is back (0 when allowed)
    # Which tier these numbers are of: global, client or key (the tightest one).
    level: str = "client"

    @property
    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


@dataclass(frozen=True, slots=True)
class QuotaPeriod:
    """A calendar month in UTC: quotas count the messages accepted in one."""

    start: datetime
    end: datetime

    @classmethod
    def containing(cls, moment: datetime) -> QuotaPeriod:
        moment = moment.astimezone(UTC)
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        if moment.month == 12:
            end = datetime(moment.year + 1, 1, 1, tzinfo=UTC)
        else:
            end = datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
        return cls(start, end)

    @classmethod
    def parse(cls, label: str) -> QuotaPeriod:
        """``"2026-11"`` → November 2026; ValueError for anything else."""
        match = re.fullmatch(r"(\d{4})-(\d{2})", label)
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise ValueError(f"a quota period is written YYYY-MM, not {label!r}")
        return cls.containing(datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=UTC))

    @classmethod
    def day_containing(cls, moment: datetime) -> QuotaPeriod:
        """The UTC day: what a client's daily limit counts in."""
        moment = moment.astimezone(UTC)
        start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        return cls(start, start + timedelta(days=1))

    @property
    def is_day(self) -> bool:
        return self.end - self.start == timedelta(days=1)

    @property
    def label(self) -> str:
        """``2026-11`` for a month, ``2026-11-05`` for a day: also the counter's Redis key."""
        if self.is_day:
            return f"{self.start.year:04d}-{self.start.month:02d}-{self.start.day:02d}"
        return f"{self.start.year:04d}-{self.start.month:02d}"

    def seconds_until_end(self, now: datetime) -> int:
        return max(1, int((self.end - now).total_seconds() + 0.999))


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    period: QuotaPeriod
    used: int
    limit: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action, as the append-only audit table keeps it."""

    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source_ip: str | None
    at: datetime | None = field(default=None)
    # The log's sequence number, set when read back: the order actions were
    # recorded in (``at`` is the transaction's start, so it can tie).
    seq: int | None = field(default=None)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for an admin action, and from where."""

    name: str
    source_ip: str | None = None

    def entry(
        self,
        action: str,
        target: tuple[str, str],
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> AuditEntry:
        """The audit row of ``action`` on ``target`` (its type and id) by this actor."""
        return AuditEntry(
            actor=self.name,
            action=action,
            target_type=target[0],
            target_id=target[1],
            before=before,
            after=after,
            source_ip=self.source_ip,
        )


# Changes made by Mailroom itself (the local runner's demo client).
SYSTEM_ACTOR = Actor("system")
