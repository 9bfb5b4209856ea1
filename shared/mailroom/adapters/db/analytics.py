"""The analytics rollups and reputation states in PostgreSQL (issue 21 items 4 and 5).

The roll-up claims queued event ids with ``DELETE ... FOR UPDATE SKIP
LOCKED``: two roll-ups never take the same id, and an id comes back if the
transaction that took it rolls back. Rollup rows are upserted in key order,
so two roll-ups adding to the same rows lock them in the same order and
cannot deadlock. Queries read rollup rows only, never messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, and_, cast, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from mailroom.adapters.db.array_literals import text_array, uuid_array
from mailroom.adapters.db.tables import (
    AnalyticsHourlyByRow,
    AnalyticsHourlyRow,
    ClientRow,
    ReputationStateRow,
)
from mailroom.domain.analytics import COUNTERS, AnalyticsQuery, Dimension, EventFacts, Granularity
from mailroom.domain.reputation import HourCounts, ReputationState, Window

_CLAIM = text(
    """
    WITH claimed AS (
        DELETE FROM analytics_pending p
        WHERE p.event_id IN (
            SELECT event_id FROM analytics_pending ORDER BY event_id
            LIMIT :limit FOR UPDATE SKIP LOCKED
        )
        RETURNING p.event_id
    )
    SELECT e.id, e.message_id, e.type, e.at,
           -- Only what the counting reads: a provider's response or a user
           -- agent would be parsed for nothing.
           jsonb_strip_nulls(jsonb_build_object(
               'machine', e.detail -> 'machine',
               'reject_reason', e.detail -> 'reject_reason',
               'recipient', e.detail -> 'recipient',
               'recipients', e.detail -> 'recipients'
           )) AS detail,
           m.client_id, m.queue_id, m.template_name, m.from_address, m.recipient,
           CASE WHEN e.type = 'sent' THEN m.to_addresses END AS to_addresses,
           CASE WHEN e.type = 'sent' THEN m.cc_addresses END AS cc_addresses,
           CASE WHEN e.type = 'sent' THEN m.bcc_addresses END AS bcc_addresses,
           m.options -> 'tags' AS tags, m.is_test
    FROM claimed c
    JOIN message_events e ON e.id = c.event_id
    JOIN messages m ON m.id = e.message_id
    ORDER BY e.id
    """
)

_FIRSTS = text(
    """
    INSERT INTO analytics_firsts (message_id, kind)
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:kinds AS text[])) AS f(message_id, kind)
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    RETURNING message_id, kind
    """
)

ByKey = tuple[uuid.UUID, str, str, bool, datetime]  # client, dimension, value, is_test, hour
FullKey = tuple[uuid.UUID, bool, datetime, str, str, str, str]


def _list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class StoredReputation:
    client_id: uuid.UUID
    sending_domain: str
    state: ReputationState
    window: Window
    evaluated_at: datetime
    changed_at: datetime
    lifted_at: datetime | None = None


class SqlAnalyticsRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    # --- the roll-up ------------------------------------------------------------

    def claim_pending(self, limit: int) -> list[EventFacts]:
        """Take up to ``limit`` queued events off the queue (gone once committed)."""
        rows = self._session.execute(_CLAIM, {"limit": limit}).all()
        return [
            EventFacts(
                event_id=row.id,
                message_id=row.message_id,
                type=row.type,
                at=row.at,
                detail=row.detail if isinstance(row.detail, dict) else {},
                client_id=row.client_id,
                queue_id=row.queue_id,
                template_name=row.template_name,
                from_address=row.from_address,
                recipient=row.recipient,
                addressees=[
                    *_list(row.to_addresses),
                    *_list(row.cc_addresses),
                    *_list(row.bcc_addresses),
                ],
                tags=_list(row.tags),
                is_test=row.is_test,
            )
            for row in rows
        ]

    def claim_firsts(self, wanted: Iterable[tuple[uuid.UUID, str]]) -> set[tuple[uuid.UUID, str]]:
        """The (message, open|click) pairs that had no first yet and have one now."""
        pairs = sorted(set(wanted), key=lambda p: (str(p[0]), p[1]))
        if not pairs:
            return set()
        rows = self._session.execute(
            _FIRSTS,
            {"ids": uuid_array(p[0] for p in pairs), "kinds": text_array(p[1] for p in pairs)},
        ).all()
        return {(row.message_id, row.kind) for row in rows}

    def add(
        self,
        full: Mapping[FullKey, Mapping[str, int]],
        by: Mapping[ByKey, Mapping[str, int]],
    ) -> None:
        """Add counts to both rollups, each in key order (see the module docstring)."""
        if full:
            ordered = sorted(full.items(), key=lambda item: tuple(map(str, item[0])))
            self._upsert(
                AnalyticsHourlyRow,
                [
                    {
                        "client_id": k[0],
                        "is_test": k[1],
                        "hour": k[2],
                        "queue": k[3],
                        "template": k[4],
                        "sending_domain": k[5],
                        "recipient_group": k[6],
                        **_complete(counts),
                    }
                    for k, counts in ordered
                ],
                [
                    "client_id",
                    "is_test",
                    "hour",
                    "queue",
                    "template",
                    "sending_domain",
                    "recipient_group",
                ],
            )
        if by:
            ordered_by = sorted(by.items(), key=lambda item: tuple(map(str, item[0])))
            self._upsert(
                AnalyticsHourlyByRow,
                [
                    {
                        "client_id": k[0],
                        "dimension": k[1],
                        "value": k[2],
                        "is_test": k[3],
                        "hour": k[4],
                        **_complete(counts),
                    }
                    for k, counts in ordered_by
                ],
                ["client_id", "dimension", "value", "is_test", "hour"],
            )

    def _upsert(self, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
        statement = insert(table).values(rows)
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=keys,
                set_={name: getattr(table, name) + statement.excluded[name] for name in COUNTERS},
            )
        )

    def pending(self) -> int:
        return int(
            self._session.execute(text("SELECT count(*) FROM analytics_pending")).scalar_one()
        )

    # --- queries ----------------------------------------------------------------

    def hourly(self, query: AnalyticsQuery) -> dict[datetime, dict[str, int]]:
        """Counts per UTC hour of the range (per local day, by day), for the query's client
        (or all) and filters; keyed by the bucket's first instant."""
        if len(query.filters) <= 1:
            table: Any = AnalyticsHourlyByRow
            if query.filters:
                ((dimension, value),) = query.filters.items()
            else:
                dimension, value = Dimension.ALL, ""
            conditions = [
                table.dimension == dimension.value,
                table.value == value,
            ]
        else:
            table = AnalyticsHourlyRow
            columns = {
                Dimension.QUEUE: table.queue,
                Dimension.TEMPLATE: table.template,
                Dimension.SENDING_DOMAIN: table.sending_domain,
                Dimension.RECIPIENT_GROUP: table.recipient_group,
            }
            conditions = [columns[d] == v for d, v in query.filters.items()]
        conditions += [
            table.is_test.is_(query.test),
            table.hour >= query.start,
            table.hour < query.end,
        ]
        if query.client_id is not None:
            conditions.append(table.client_id == query.client_id)
        # By day, PostgreSQL groups the hours into local days (the day each
        # hour starts in, as domain.analytics.bucket_start does), so 90 days
        # are 90 rows, not 2,160. Sums are cast back to bigint: pg8000 reads a
        # numeric as a Decimal, ten times slower than an int.
        bucket: Any = (
            func.date_trunc("day", table.hour, query.tz.key)
            if query.granularity is Granularity.DAY
            else table.hour
        )
        statement = (
            select(
                bucket.label("bucket"),
                *(cast(func.sum(getattr(table, name)), BigInteger) for name in COUNTERS),
            )
            .where(and_(*conditions))
            # By position: the zone is a bound parameter, and a second copy of
            # it in GROUP BY would be another expression to PostgreSQL.
            .group_by(text("1"))
        )
        return {
            row[0]: {name: int(value or 0) for name, value in zip(COUNTERS, row[1:], strict=True)}
            for row in self._session.execute(statement)
        }

    # --- reputation -------------------------------------------------------------

    def reputation_hours(
        self, since: datetime, client_ids: Sequence[uuid.UUID] | None = None
    ) -> dict[tuple[uuid.UUID, str], list[HourCounts]]:
        """Live traffic per client ('' key) and per sending domain, hour by hour since ``since``."""
        table = AnalyticsHourlyByRow
        statement = select(
            table.client_id,
            table.dimension,
            table.value,
            table.hour,
            table.sent,
            table.hard_bounces,
            table.complaints,
        ).where(
            table.dimension.in_([Dimension.ALL.value, Dimension.SENDING_DOMAIN.value]),
            table.is_test.is_(False),
            table.hour >= since,
        )
        if client_ids is not None:
            statement = statement.where(table.client_id.in_(list(client_ids)))
        found: dict[tuple[uuid.UUID, str], list[HourCounts]] = {}
        for row in self._session.execute(statement):
            domain = "" if row.dimension == Dimension.ALL.value else row.value
            found.setdefault((row.client_id, domain), []).append(
                HourCounts(row.hour, row.sent, row.hard_bounces, row.complaints)
            )
        return found

    def reputations(self, client_id: uuid.UUID | None = None) -> list[StoredReputation]:
        statement = select(ReputationStateRow).order_by(
            ReputationStateRow.client_id, ReputationStateRow.sending_domain
        )
        if client_id is not None:
            statement = statement.where(ReputationStateRow.client_id == client_id)
        return [
            StoredReputation(
                client_id=row.client_id,
                sending_domain=row.sending_domain,
                state=ReputationState(row.state),
                window=Window(row.window_start, row.sent, row.hard_bounces, row.complaints),
                evaluated_at=row.evaluated_at,
                changed_at=row.changed_at,
                lifted_at=row.lifted_at,
            )
            for row in self._session.execute(statement).scalars()
        ]

    def save_reputation(self, stored: StoredReputation) -> None:
        values = {
            "client_id": stored.client_id,
            "sending_domain": stored.sending_domain,
            "state": stored.state.value,
            "sent": stored.window.sent,
            "hard_bounces": stored.window.hard_bounces,
            "complaints": stored.window.complaints,
            "window_start": stored.window.start,
            "evaluated_at": stored.evaluated_at,
            "changed_at": stored.changed_at,
            "lifted_at": stored.lifted_at,
        }
        statement = insert(ReputationStateRow).values(values)
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["client_id", "sending_domain"],
                set_={k: statement.excluded[k] for k in values if k not in ("client_id",)},
            )
        )

    def set_paused(self, client_id: uuid.UUID, at: datetime | None, reason: str | None) -> bool:
        """Pause (``at`` set) or lift (None) the client's sending; False if no such client."""
        result = self._session.execute(
            update(ClientRow)
            .where(ClientRow.id == client_id)
            .values(sending_paused_at=at, sending_paused_reason=reason, updated_at=func.now())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _complete(counts: Mapping[str, int]) -> dict[str, int]:
    return {name: int(counts.get(name, 0)) for name in COUNTERS}
