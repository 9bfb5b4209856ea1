"""Delivery analytics (issue 21 item 4): what each message event adds to the hourly rollups.

The rollups are kept per UTC hour. Every IANA zone whose offset is a whole
number of hours is exact by hour and by day. A zone with a half- or
quarter-hour offset (Asia/Kolkata, Australia/Adelaide, Asia/Kathmandu) is
exact by hour (each UTC hour is one local hour, labelled :30 or :45) but not
by day: a UTC hour belongs to the local day its start falls in, so such a
"day" runs from 00:30 (00:45) to 00:30 local. The answer says so
(``exact: false``) rather than pretend.

Counting rules, per event:
- ``sent`` counts addressees (to, cc and bcc of the row, which hold what the
  suppression list left), as SES counts sends; each addressee lands in its own
  recipient domain group.
- a bounce is hard when the provider said the address is bad (``bounced``,
  ``invalid``), soft otherwise (blocked, timed out, other); the bounce rate is
  hard bounces over sent, as SES computes it.
- opens and clicks are counted every time; ``machine_*`` those flagged as a
  proxy or scanner; ``unique_*`` the first human open (click) of a message,
  decided once per message by a unique row (adapters/db/analytics.py), in the
  hour of the first one the roll-up sees (an earlier open whose writer commits
  late does not move it).
"""

from __future__ import annotations

import email.utils
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from mailroom.domain.errors import InvalidRequest
from mailroom.domain.model import EventType
from mailroom.domain.scheduling import zone
from mailroom.domain.throttling import DomainGroup, group_of

# The counters every rollup row holds, in column order.
COUNTERS: tuple[str, ...] = (
    "sent",
    "delivered",
    "hard_bounces",
    "soft_bounces",
    "complaints",
    "opens",
    "machine_opens",
    "unique_opens",
    "clicks",
    "machine_clicks",
    "unique_clicks",
    "unsubscribes",
    "suppressed",
    "failed",
)

# The message event types the rollups read; the trigger queues only these.
COUNTED_TYPES: tuple[str, ...] = (
    EventType.SENT.value,
    EventType.DELIVERED.value,
    EventType.BOUNCED.value,
    EventType.COMPLAINED.value,
    EventType.OPENED.value,
    EventType.CLICKED.value,
    EventType.UNSUBSCRIBED.value,
    EventType.SUPPRESSED.value,
    EventType.RECIPIENTS_SUPPRESSED.value,
    EventType.FAILED.value,
)

HARD_BOUNCE_REASONS = frozenset({"bounced", "invalid"})

# Ranges: 31 days by hour (744 points), 400 days by day. Longer ranges are
# refused rather than answered slowly.
MAX_HOURLY_RANGE = timedelta(days=31)
MAX_DAILY_RANGE = timedelta(days=400)

DEFAULT_QUEUE = "default"
# Far enough either way for any real range; keeps date arithmetic off its limits.
MIN_YEAR = 2000
MAX_YEAR = 2200


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"


class Dimension(StrEnum):
    """What a rollup row of ``analytics_hourly_by`` is cut by; ALL is the client's total."""

    ALL = "all"
    QUEUE = "queue"
    TEMPLATE = "template"
    SENDING_DOMAIN = "sending_domain"
    RECIPIENT_GROUP = "recipient_group"
    TAG = "tag"


# The query parameters a filter may use (each a Dimension but ALL).
FILTERS: tuple[Dimension, ...] = (
    Dimension.QUEUE,
    Dimension.TEMPLATE,
    Dimension.TAG,
    Dimension.SENDING_DOMAIN,
    Dimension.RECIPIENT_GROUP,
)


@dataclass(frozen=True, slots=True)
class EventFacts:
    """One queued message event and what its message says, as the roll-up reads them."""

    event_id: int
    message_id: uuid.UUID
    type: str
    at: datetime
    detail: Mapping[str, Any]
    client_id: uuid.UUID
    queue_id: uuid.UUID | None
    template_name: str
    from_address: str
    recipient: str
    addressees: Sequence[str]
    tags: Sequence[str]
    is_test: bool


@dataclass(frozen=True, slots=True)
class RollupKey:
    client_id: uuid.UUID
    hour: datetime
    queue: str
    template: str
    sending_domain: str
    recipient_group: str
    is_test: bool


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one event adds: counters under one rollup key (an event may make several)."""

    key: RollupKey
    counts: Mapping[str, int]


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@lru_cache(maxsize=8192)
def domain_of(address: str) -> str:
    """The domain of a bare address or a "Name <address>" (cached: senders repeat)."""
    if "<" in address or '"' in address or "(" in address:
        _, bare = email.utils.parseaddr(address)
        address = bare or address
    return address.rpartition("@")[2].strip().strip(">").lower().rstrip(".")


def queue_label(queue_id: uuid.UUID | None) -> str:
    return DEFAULT_QUEUE if queue_id is None else str(queue_id)


def contributions(facts: EventFacts, *, first_open: bool, first_click: bool) -> list[Contribution]:
    """What ``facts`` adds to the rollups. ``first_*``: this event is the message's first
    human open (click), as the unique table decided."""

    def key(recipient: str) -> RollupKey:
        return RollupKey(
            client_id=facts.client_id,
            hour=hour_of(facts.at),
            queue=queue_label(facts.queue_id),
            template=facts.template_name,
            sending_domain=domain_of(facts.from_address),
            recipient_group=group_of(domain_of(recipient) or "").value,
            is_test=facts.is_test,
        )

    detail = facts.detail
    kind = facts.type
    if kind == EventType.SENT.value:
        by_group: dict[RollupKey, int] = {}
        for address in facts.addressees or [facts.recipient]:
            k = key(address)
            by_group[k] = by_group.get(k, 0) + 1
        return [Contribution(k, {"sent": n}) for k, n in by_group.items()]
    if kind in (EventType.SUPPRESSED.value, EventType.RECIPIENTS_SUPPRESSED.value):
        listed = detail.get("recipients")
        addresses = [
            str(entry.get("address", ""))
            for entry in (listed if isinstance(listed, list) else [])
            if isinstance(entry, dict)
        ] or [facts.recipient]
        by_group = {}
        for address in addresses:
            k = key(address)
            by_group[k] = by_group.get(k, 0) + 1
        return [Contribution(k, {"suppressed": n}) for k, n in by_group.items()]
    recipient = str(detail.get("recipient") or facts.recipient)
    counts: dict[str, int]
    if kind == EventType.DELIVERED.value:
        counts = {"delivered": 1}
    elif kind == EventType.BOUNCED.value:
        hard = str(detail.get("reject_reason") or "") in HARD_BOUNCE_REASONS
        counts = {"hard_bounces" if hard else "soft_bounces": 1}
    elif kind == EventType.COMPLAINED.value:
        counts = {"complaints": 1}
    elif kind == EventType.OPENED.value:
        counts = {"opens": 1}
        if detail.get("machine") is True:
            counts["machine_opens"] = 1
        elif first_open:
            counts["unique_opens"] = 1
    elif kind == EventType.CLICKED.value:
        counts = {"clicks": 1}
        if detail.get("machine") is True:
            counts["machine_clicks"] = 1
        elif first_click:
            counts["unique_clicks"] = 1
    elif kind == EventType.UNSUBSCRIBED.value:
        counts = {"unsubscribes": 1}
    elif kind == EventType.FAILED.value:
        counts = {"failed": 1}
    else:
        return []
    return [Contribution(key(recipient), counts)]


def is_human(facts: EventFacts) -> bool:
    return facts.detail.get("machine") is not True


# --- the answer's arithmetic --------------------------------------------------


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


def add_counts(into: dict[str, int], other: Mapping[str, int]) -> None:
    for name, value in other.items():
        into[name] = into.get(name, 0) + int(value)


def _rate(numerator: int, denominator: int) -> float | None:
    return None if denominator <= 0 else round(numerator / denominator, 6)


def rates(counts: Mapping[str, int]) -> dict[str, float | None]:
    """The rates of a count set; None where the denominator is zero (no division by zero,
    no 0 % that means "nothing sent")."""
    sent = counts.get("sent", 0)
    return {
        "delivery_rate": _rate(counts.get("delivered", 0), sent),
        "bounce_rate": _rate(counts.get("hard_bounces", 0), sent),
        "soft_bounce_rate": _rate(counts.get("soft_bounces", 0), sent),
        "complaint_rate": _rate(counts.get("complaints", 0), sent),
        "unique_open_rate": _rate(counts.get("unique_opens", 0), counts.get("delivered", 0)),
        "click_rate": _rate(counts.get("unique_clicks", 0), counts.get("delivered", 0)),
        "click_to_open_rate": _rate(counts.get("unique_clicks", 0), counts.get("unique_opens", 0)),
        "unsubscribe_rate": _rate(counts.get("unsubscribes", 0), counts.get("delivered", 0)),
    }


# --- the query ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnalyticsQuery:
    """A validated analytics request: a UTC hour range, its local bucketing and one cut."""

    start: datetime  # inclusive, a whole UTC hour
    end: datetime  # exclusive, a whole UTC hour
    granularity: Granularity
    tz: ZoneInfo
    filters: dict[Dimension, str] = field(default_factory=dict)
    client_id: uuid.UUID | None = None  # None: every client (the admin view)
    test: bool = False

    @property
    def exact(self) -> bool:
        """Whether every local bucket is a whole number of UTC hours."""
        if self.granularity is Granularity.HOUR:
            return True
        return all(_offset_is_whole_hours(self.tz, at) for at in (self.start, self.end))


def _offset_is_whole_hours(tz: ZoneInfo, at: datetime) -> bool:
    offset = at.astimezone(tz).utcoffset() or timedelta(0)
    return offset.total_seconds() % 3600 == 0


def _refuse(field_name: str, kind: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, details=[{"field": field_name, "type": kind}])


def _parse_time(value: str, field_name: str, tz: ZoneInfo) -> datetime:
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            parsed = datetime(day.year, day.month, day.day)
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise _refuse(
            field_name, "invalid_datetime", f"{field_name}: {value!r} is not an ISO 8601 time"
        ) from error
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise _refuse(field_name, "invalid_datetime", f"{field_name}: a year {MIN_YEAR}-{MAX_YEAR}")
    # A time without an offset is read in the request's zone.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def _floor_hour(at: datetime) -> datetime:
    return hour_of(at)


def _ceil_hour(at: datetime) -> datetime:
    floored = hour_of(at)
    return floored if floored == at.astimezone(UTC) else floored + timedelta(hours=1)


def parse_query(
    params: Mapping[str, str],
    *,
    now: datetime,
    client_id: uuid.UUID | None,
    allowed: Iterable[str] = (),
) -> AnalyticsQuery:
    """Validate an analytics request's query string; every refusal is a 422 naming its field.

    ``allowed``: parameters a route takes besides the common ones (the admin's
    ``client_id``). An unknown parameter is refused, so a misspelt filter
    never answers unfiltered numbers.
    """
    known = {"from", "to", "granularity", "tz", "test", *(f.value for f in FILTERS), *allowed}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter(s): {', '.join(unknown)}; filters are "
            f"{', '.join(f.value for f in FILTERS)}",
            details=[{"field": name, "type": "unknown_filter"} for name in unknown],
        )
    tz_name = params.get("tz") or "UTC"
    try:
        tz = zone(tz_name)
    except InvalidRequest as error:
        raise _refuse("tz", "unknown_timezone", f"tz: {tz_name!r} is not an IANA zone") from error
    try:
        granularity = Granularity(params.get("granularity") or Granularity.DAY.value)
    except ValueError as error:
        raise _refuse("granularity", "enum", "granularity: hour or day") from error
    limit = MAX_HOURLY_RANGE if granularity is Granularity.HOUR else MAX_DAILY_RANGE
    end = _parse_time(params["to"], "to", tz) if params.get("to") else now
    start = (
        _parse_time(params["from"], "from", tz)
        if params.get("from")
        else end - (timedelta(days=1) if granularity is Granularity.HOUR else timedelta(days=30))
    )
    if start >= end:
        raise _refuse("from", "range", "from must be before to")
    if end - start > limit:
        raise _refuse(
            "to",
            "range_too_long",
            f"the range is over {limit.days} days; by {granularity.value} at most "
            f"{limit.days} days are answered",
        )
    filters: dict[Dimension, str] = {}
    for dimension in FILTERS:
        value = params.get(dimension.value)
        if value is None:
            continue
        if not value or len(value) > 255:
            raise _refuse(dimension.value, "invalid", f"{dimension.value}: 1 to 255 characters")
        filters[dimension] = _normal_filter(dimension, value)
    if Dimension.TAG in filters and len(filters) > 1:
        raise _refuse(
            "tag",
            "unsupported_combination",
            "tag cannot be combined with another filter (tags are rolled up on their own)",
        )
    test = params.get("test", "false").lower()
    if test not in ("true", "false"):
        raise _refuse("test", "boolean", "test: true or false")
    first = _floor_hour(start)
    if granularity is Granularity.DAY and first.astimezone(tz).date() < start.astimezone(tz).date():
        # A half-hour zone: the floored hour starts on the day before (23:30);
        # its local days run from 00:30, so the range does too.
        first += timedelta(hours=1)
    return AnalyticsQuery(
        start=first,
        end=_ceil_hour(end),
        granularity=granularity,
        tz=tz,
        filters=filters,
        client_id=client_id,
        test=test == "true",
    )


def _normal_filter(dimension: Dimension, value: str) -> str:
    if dimension is Dimension.RECIPIENT_GROUP:
        try:
            return DomainGroup(value.lower()).value
        except ValueError as error:
            raise _refuse(
                dimension.value,
                "enum",
                f"recipient_group: one of {', '.join(g.value for g in DomainGroup)}",
            ) from error
    if dimension is Dimension.QUEUE and value != DEFAULT_QUEUE:
        try:
            return str(uuid.UUID(value))
        except ValueError as error:
            raise _refuse("queue", "invalid", "queue: a queue id or 'default'") from error
    if dimension is Dimension.SENDING_DOMAIN:
        return value.lower().rstrip(".")
    return value


def bucket_start(hour: datetime, query: AnalyticsQuery) -> datetime:
    """The local bucket a UTC hour belongs to: its own hour, or the local day it starts in."""
    local = hour.astimezone(query.tz)
    if query.granularity is Granularity.HOUR:
        return local
    return datetime(local.year, local.month, local.day, tzinfo=query.tz)


@dataclass(frozen=True, slots=True)
class Point:
    start: datetime
    counts: dict[str, int]


def series(hours: Mapping[datetime, Mapping[str, int]], query: AnalyticsQuery) -> list[Point]:
    """Every bucket of the range in order, empty ones included (a chart needs the zeros)."""
    buckets: dict[datetime, dict[str, int]] = {}
    if query.granularity is Granularity.DAY:
        # Day by day (90 steps, not 2,160): every local date from the first
        # hour's to the last hour's.
        day = bucket_start(query.start, query).date()
        last = bucket_start(query.end - timedelta(hours=1), query).date()
        while day <= last:
            buckets[datetime(day.year, day.month, day.day, tzinfo=query.tz)] = empty_counts()
            day += timedelta(days=1)
    else:
        at = query.start
        while at < query.end:
            buckets.setdefault(bucket_start(at, query), empty_counts())
            at += timedelta(hours=1)
    for hour, counts in hours.items():
        found = buckets.get(bucket_start(hour, query))
        if found is not None:
            add_counts(found, counts)
    return [Point(start, counts) for start, counts in buckets.items()]


def total(points: Iterable[Point]) -> dict[str, int]:
    summed = empty_counts()
    for point in points:
        add_counts(summed, point.counts)
    return summed
