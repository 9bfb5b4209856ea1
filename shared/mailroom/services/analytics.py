"""Delivery analytics (issue 21 item 4): the roll-up, and the time series read from it.

``roll_up`` takes queued message events (a trigger queues them, whatever
wrote them; see migration w21aan01), works out what each adds, and adds it to
the hourly rollups in the same transaction as it deletes them from the
queue. Each event is counted once: a crash rolls both back, and concurrent
roll-ups claim disjoint events (SKIP LOCKED). A message's first human open
(click) is decided by a unique row, so two roll-ups holding two of its opens
cannot both call theirs the first.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mailroom.adapters.db.analytics import ByKey, FullKey
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.analytics import (
    COUNTERS,
    AnalyticsQuery,
    Dimension,
    EventFacts,
    Point,
    add_counts,
    contributions,
    is_human,
    rates,
    series,
    total,
)
from mailroom.domain.model import EventType

ROLL_UP_BATCH = 5_000
# Per tag and per value: what a rollup row's key column holds at most.
MAX_VALUE_LENGTH = 255


@dataclass(frozen=True, slots=True)
class RollUpReport:
    events: int
    batches: int
    rows: int


def _first_kind(facts: EventFacts) -> str | None:
    if not is_human(facts):
        return None
    if facts.type == EventType.OPENED.value:
        return "open"
    if facts.type == EventType.CLICKED.value:
        return "click"
    return None


# Plain strings: an enum member's .value costs a descriptor call per event.
_ALL, _QUEUE, _TEMPLATE, _DOMAIN, _GROUP, _TAG = (
    Dimension.ALL.value,
    Dimension.QUEUE.value,
    Dimension.TEMPLATE.value,
    Dimension.SENDING_DOMAIN.value,
    Dimension.RECIPIENT_GROUP.value,
    Dimension.TAG.value,
)


def fold(
    batch: list[EventFacts], firsts: set[tuple[uuid.UUID, str]]
) -> tuple[dict[FullKey, dict[str, int]], dict[ByKey, dict[str, int]]]:
    """The rollup additions of ``batch``; ``firsts``: the pairs this batch made first.

    The first of a pair goes to the pair's earliest event in the batch. Events
    are summed per full key and tag set first; the one-dimension rows are then
    derived from those sums (a few hundred keys, not one pass per event).
    """
    tagged: dict[tuple[FullKey, tuple[str, ...]], dict[str, int]] = {}
    granted = set(firsts)
    for facts in batch:  # ordered by event id
        kind = _first_kind(facts)
        first = kind is not None and (facts.message_id, kind) in granted
        if first:
            granted.discard((facts.message_id, kind))
        tags = tuple(sorted({tag[:MAX_VALUE_LENGTH] for tag in facts.tags}))
        for part in contributions(
            facts, first_open=first and kind == "open", first_click=first and kind == "click"
        ):
            k = part.key
            full_key: FullKey = (
                k.client_id,
                k.is_test,
                k.hour,
                k.queue,
                k.template[:128],
                k.sending_domain[:MAX_VALUE_LENGTH],
                k.recipient_group,
            )
            add_counts(tagged.setdefault((full_key, tags), {}), part.counts)
    full: dict[FullKey, dict[str, int]] = {}
    by: dict[ByKey, dict[str, int]] = {}
    for (full_key, tags), counts in tagged.items():
        add_counts(full.setdefault(full_key, {}), counts)
        client_id, is_test, hour = full_key[0], full_key[1], full_key[2]
        for tag in tags:
            add_counts(by.setdefault((client_id, _TAG, tag, is_test, hour), {}), counts)
    for full_key, counts in full.items():
        client_id, is_test, hour, queue, template, domain, group = full_key
        for dimension, value in (
            (_ALL, ""),
            (_QUEUE, queue),
            (_TEMPLATE, template),
            (_DOMAIN, domain),
            (_GROUP, group),
        ):
            add_counts(by.setdefault((client_id, dimension, value, is_test, hour), {}), counts)
    return full, by


def roll_up(
    uow: UnitOfWork, *, batch_size: int = ROLL_UP_BATCH, max_batches: int = 100
) -> RollUpReport:
    """Count what the queue holds, a batch per transaction, until it is empty (or the cap)."""
    events = batches = rows = 0
    for _ in range(max_batches):
        with uow:
            batch = uow.analytics.claim_pending(batch_size)
            if not batch:
                break
            wanted = {
                (facts.message_id, kind)
                for facts in batch
                if (kind := _first_kind(facts)) is not None
            }
            firsts = uow.analytics.claim_firsts(wanted)
            full, by = fold(batch, firsts)
            uow.analytics.add(full, by)
            uow.commit()
        events += len(batch)
        batches += 1
        rows += len(full) + len(by)
        if len(batch) < batch_size:
            break
    return RollUpReport(events, batches, rows)


# --- the views -------------------------------------------------------------------

VIEWS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "overview": (COUNTERS, tuple(rates({}).keys())),
    "delivery": (
        ("sent", "delivered", "failed", "suppressed", "hard_bounces", "soft_bounces"),
        ("delivery_rate",),
    ),
    "engagement": (
        (
            "delivered",
            "opens",
            "machine_opens",
            "unique_opens",
            "clicks",
            "machine_clicks",
            "unique_clicks",
            "unsubscribes",
        ),
        ("unique_open_rate", "click_rate", "click_to_open_rate", "unsubscribe_rate"),
    ),
    "bounces": (
        ("sent", "hard_bounces", "soft_bounces", "complaints"),
        ("bounce_rate", "soft_bounce_rate", "complaint_rate"),
    ),
}


def _figures(counts: Mapping[str, int], view: str) -> dict[str, Any]:
    names, rate_names = VIEWS[view]
    computed = rates(counts)
    return {
        **{name: counts.get(name, 0) for name in names},
        **{name: computed[name] for name in rate_names},
    }


def report(uow: UnitOfWork, query: AnalyticsQuery, view: str) -> dict[str, Any]:
    """The answer of GET /v1/analytics/<view>: the range, the totals and one point per bucket."""
    with uow:
        hours = uow.analytics.hourly(query)
    points: list[Point] = series(hours, query)
    answer: dict[str, Any] = {
        "view": view,
        "range": {
            "from": query.start.astimezone(query.tz).isoformat(),
            "to": query.end.astimezone(query.tz).isoformat(),
            "granularity": query.granularity.value,
            "tz": query.tz.key,
            "exact": query.exact,
        },
        "filters": {d.value: v for d, v in query.filters.items()},
        "test": query.test,
        "totals": _figures(total(points), view),
        "series": [
            {"start": point.start.isoformat(), **_figures(point.counts, view)} for point in points
        ],
    }
    if query.client_id is not None:
        answer["client_id"] = str(query.client_id)
    return answer
