"""Outbound webhooks in PostgreSQL: endpoints, the outbox, deliveries and their attempts.

Batches travel as one JSON document (``jsonb_to_recordset``) or one array
literal per statement, so a dispatcher batch of any size costs a fixed number
of round trips (pg8000 would otherwise send one statement per row).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from mailroom.domain.outbound_webhooks import Endpoint, OutboxEvent

# One relay at a time gives feed_seq in the order rows became visible.
RELAY_LOCK_KEY = 19_019_001

_ENDPOINT_COLUMNS = (
    "id, client_id, url, description, event_types, opens, secret_sealed, previous_secret_sealed, "
    "previous_secret_expires_at, disabled_at, disabled_reason, failing_since, created_at, "
    "updated_at"
)
_EVENT_COLUMNS = (
    "id, client_id, type, at, detail, message_id, metadata, recipients, is_test, feed_seq"
)


def _endpoint(row: Row[Any]) -> Endpoint:
    return Endpoint(
        id=row.id,
        client_id=row.client_id,
        url=row.url,
        description=row.description,
        event_types=row.event_types,
        opens=row.opens,
        secret_sealed=row.secret_sealed,
        previous_secret_sealed=row.previous_secret_sealed,
        previous_secret_expires_at=row.previous_secret_expires_at,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
        failing_since=row.failing_since,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _event(row: Row[Any]) -> OutboxEvent:
    return OutboxEvent(
        id=row.id,
        client_id=row.client_id,
        type=row.type,
        at=row.at,
        detail=row.detail or {},
        message_id=row.message_id,
        metadata=row.metadata or {},
        recipients=row.recipients or [],
        is_test=row.is_test,
        feed_seq=row.feed_seq,
    )


def _ints(values: Sequence[int]) -> str:
    return "{" + ",".join(str(int(v)) for v in values) + "}"


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    endpoint_id: uuid.UUID
    event_id: int
    attempts: int


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What the dispatcher writes back for one delivery after one attempt."""

    delivery_id: int
    claim_token: uuid.UUID
    endpoint_id: uuid.UUID
    status: str
    next_attempt_at: datetime | None
    enqueued_until: datetime | None
    at: datetime
    status_code: int | None
    latency_ms: int
    response_excerpt: str
    error: str | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: int
    delivery_id: int
    event_id: int
    event_type: str
    delivery_status: str
    at: datetime
    status_code: int | None
    response_excerpt: str
    error: str | None
    latency_ms: int
    next_attempt_at: datetime | None


class SqlWebhookRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    # --- endpoints ----------------------------------------------------------

    def add_endpoint(self, endpoint: Endpoint) -> None:
        self._session.execute(
            text(
                "INSERT INTO webhook_endpoints (id, client_id, url, description, event_types, "
                "opens, secret_sealed) VALUES (:id, :client_id, :url, :description, "
                "CAST(:event_types AS jsonb), :opens, :secret_sealed)"
            ),
            {
                "id": endpoint.id,
                "client_id": endpoint.client_id,
                "url": endpoint.url,
                "description": endpoint.description,
                "event_types": None
                if endpoint.event_types is None
                else json.dumps(endpoint.event_types),
                "opens": endpoint.opens,
                "secret_sealed": endpoint.secret_sealed,
            },
        )

    def get_endpoint(self, endpoint_id: uuid.UUID, *, for_update: bool = False) -> Endpoint | None:
        lock = " FOR UPDATE" if for_update else ""
        row = self._session.execute(
            text(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = :id{lock}"),  # noqa: S608 - constant column lists
            {"id": endpoint_id},
        ).first()
        return _endpoint(row) if row is not None else None

    def endpoints_by_id(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Endpoint]:
        if not ids:
            return {}
        rows = self._session.execute(
            text(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints "  # noqa: S608 - constant column lists
                "WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": "{" + ",".join(str(i) for i in set(ids)) + "}"},
        ).all()
        return {row.id: _endpoint(row) for row in rows}

    def list_endpoints(self, client_id: uuid.UUID) -> list[Endpoint]:
        rows = self._session.execute(
            text(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE client_id = :client "  # noqa: S608 - constant column lists
                "ORDER BY created_at, id"
            ),
            {"client": client_id},
        ).all()
        return [_endpoint(row) for row in rows]

    def save_endpoint(self, endpoint: Endpoint) -> None:
        self._session.execute(
            text(
                "UPDATE webhook_endpoints SET url = :url, description = :description, "
                "event_types = CAST(:event_types AS jsonb), opens = :opens, "
                "secret_sealed = :secret_sealed, "
                "previous_secret_sealed = :previous, previous_secret_expires_at = :previous_until, "
                "disabled_at = :disabled_at, disabled_reason = :disabled_reason, "
                "failing_since = :failing_since, updated_at = now() WHERE id = :id"
            ),
            {
                "id": endpoint.id,
                "url": endpoint.url,
                "description": endpoint.description,
                "event_types": None
                if endpoint.event_types is None
                else json.dumps(endpoint.event_types),
                "opens": endpoint.opens,
                "secret_sealed": endpoint.secret_sealed,
                "previous": endpoint.previous_secret_sealed,
                "previous_until": endpoint.previous_secret_expires_at,
                "disabled_at": endpoint.disabled_at,
                "disabled_reason": endpoint.disabled_reason,
                "failing_since": endpoint.failing_since,
            },
        )

    def delete_endpoint(self, endpoint_id: uuid.UUID) -> None:
        self._session.execute(
            text("DELETE FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id}
        )

    # --- the outbox -----------------------------------------------------------

    def add_event(
        self, client_id: uuid.UUID, internal_type: str, detail: dict[str, Any], at: datetime
    ) -> int:
        """An event that is not a message event (endpoint disabled, a test)."""
        return int(
            self._session.execute(
                text(
                    "INSERT INTO webhook_events (client_id, type, at, detail) "
                    "VALUES (:client, :type, :at, CAST(:detail AS jsonb)) RETURNING id"
                ),
                {
                    "client": client_id,
                    "type": internal_type,
                    "at": at,
                    "detail": json.dumps(detail),
                },
            ).scalar_one()
        )

    def take_relay_lock(self) -> bool:
        """Whether this transaction is the one relay now (held until it ends)."""
        return bool(
            self._session.execute(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": RELAY_LOCK_KEY}
            ).scalar_one()
        )

    def unrelayed_events(self, limit: int) -> list[OutboxEvent]:
        rows = self._session.execute(
            text(
                f"SELECT {_EVENT_COLUMNS} FROM webhook_events WHERE feed_seq IS NULL "  # noqa: S608 - constant column lists
                "ORDER BY id LIMIT :limit"
            ),
            {"limit": limit},
        ).all()
        return [_event(row) for row in rows]

    def number_events(self, event_ids: Sequence[int]) -> None:
        """Give these events feed positions, in the order of their ids."""
        if not event_ids:
            return
        self._session.execute(
            text(
                "WITH wanted AS (SELECT id FROM unnest(CAST(:ids AS bigint[])) AS t(id) "
                "ORDER BY id), numbered AS (SELECT id, nextval('webhook_feed_seq') AS seq "
                "FROM wanted) UPDATE webhook_events w SET feed_seq = n.seq FROM numbered n "
                "WHERE w.id = n.id"
            ),
            {"ids": _ints(sorted(event_ids))},
        )

    def enabled_endpoints_of(self, client_ids: Sequence[uuid.UUID]) -> list[Endpoint]:
        if not client_ids:
            return []
        rows = self._session.execute(
            text(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints "  # noqa: S608 - constant column lists
                "WHERE client_id = ANY(CAST(:ids AS uuid[])) AND disabled_at IS NULL"
            ),
            {"ids": "{" + ",".join(str(i) for i in set(client_ids)) + "}"},
        ).all()
        return [_endpoint(row) for row in rows]

    def add_deliveries(
        self,
        pairs: Sequence[tuple[uuid.UUID, int]],
        due: datetime,
        *,
        hold_until: datetime | None = None,
    ) -> list[int]:
        """One pending delivery per (endpoint, event), due at ``due``; their ids.

        ``hold_until``: the caller queues them itself, the relay leaves them be until then.
        """
        if not pairs:
            return []
        rows = self._session.execute(
            text(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, next_attempt_at, "
                "enqueued_until) SELECT e, v, :due, :hold FROM unnest(CAST(:endpoints AS uuid[]), "
                "CAST(:events AS bigint[])) AS t(e, v) RETURNING id"
            ),
            {
                "endpoints": "{" + ",".join(str(e) for e, _ in pairs) + "}",
                "events": _ints([v for _, v in pairs]),
                "due": due,
                "hold": hold_until,
            },
        ).all()
        return [int(row.id) for row in rows]

    def take_due(self, now: datetime, hold: timedelta, limit: int) -> list[int]:
        """Pending deliveries due by ``now`` and not already on the queue, marked as queued."""
        rows = self._session.execute(
            text(
                "UPDATE webhook_deliveries SET enqueued_until = :until WHERE id IN ("
                "SELECT id FROM webhook_deliveries WHERE status = 'pending' "
                "AND next_attempt_at <= :now "
                "AND (enqueued_until IS NULL OR enqueued_until < :now) "
                "ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED) RETURNING id"
            ),
            {"now": now, "until": now + hold, "limit": limit},
        ).all()
        return sorted(int(row.id) for row in rows)

    def events_by_id(self, ids: Sequence[int]) -> dict[int, OutboxEvent]:
        if not ids:
            return {}
        rows = self._session.execute(
            text(
                f"SELECT {_EVENT_COLUMNS} FROM webhook_events "  # noqa: S608 - constant column lists
                "WHERE id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": _ints(sorted(set(ids)))},
        ).all()
        return {int(row.id): _event(row) for row in rows}

    # --- dispatching ------------------------------------------------------------

    def claim(
        self, delivery_ids: Sequence[int], now: datetime, lease: timedelta, token: uuid.UUID
    ) -> list[ClaimedDelivery]:
        """Deliveries still pending, due and not held by another dispatcher: now ours."""
        if not delivery_ids:
            return []
        rows = self._session.execute(
            text(
                "UPDATE webhook_deliveries SET claimed_until = :until, claim_token = :token "
                "WHERE id IN (SELECT id FROM webhook_deliveries "
                "WHERE id = ANY(CAST(:ids AS bigint[])) "
                "AND status = 'pending' AND next_attempt_at <= :due "
                "AND (claimed_until IS NULL OR claimed_until < :now) "
                "FOR UPDATE SKIP LOCKED) RETURNING id, endpoint_id, event_id, attempts"
            ),
            {
                "ids": _ints(delivery_ids),
                "now": now,
                # An SQS delay may end a moment before the row's due time.
                "due": now + timedelta(seconds=2),
                "until": now + lease,
                "token": token,
            },
        ).all()
        return [
            ClaimedDelivery(int(r.id), r.endpoint_id, int(r.event_id), int(r.attempts))
            for r in rows
        ]

    def record(self, results: Sequence[DeliveryResult]) -> None:
        """Outcomes of one batch: two statements whatever its size."""
        if not results:
            return
        document = json.dumps(
            [
                {
                    "id": r.delivery_id,
                    "claim_token": str(r.claim_token),
                    "endpoint_id": str(r.endpoint_id),
                    "status": r.status,
                    "next_attempt_at": _iso(r.next_attempt_at),
                    "enqueued_until": _iso(r.enqueued_until),
                    "at": _iso(r.at),
                    "status_code": r.status_code,
                    "latency_ms": r.latency_ms,
                    "response_excerpt": r.response_excerpt,
                    "error": r.error,
                }
                for r in results
            ]
        )
        self._session.execute(
            text(
                "UPDATE webhook_deliveries d SET status = r.status, attempts = d.attempts + 1, "
                "next_attempt_at = r.next_attempt_at, enqueued_until = r.enqueued_until, "
                "claimed_until = NULL, claim_token = NULL, updated_at = r.at "
                "FROM jsonb_to_recordset(CAST(:doc AS jsonb)) AS r(id bigint, claim_token uuid, "
                "status text, next_attempt_at timestamptz, enqueued_until timestamptz, "
                "at timestamptz) "
                # A claim that lapsed and was taken over is no longer ours to settle.
                "WHERE d.id = r.id AND d.claim_token = r.claim_token"
            ),
            {"doc": document},
        )
        self._session.execute(
            text(
                "INSERT INTO webhook_attempts (delivery_id, endpoint_id, at, status_code, "
                "response_excerpt, error, latency_ms, next_attempt_at) "
                "SELECT r.id, r.endpoint_id, r.at, r.status_code, r.response_excerpt, r.error, "
                "r.latency_ms, r.next_attempt_at "
                "FROM jsonb_to_recordset(CAST(:doc AS jsonb)) AS r(id bigint, endpoint_id uuid, "
                "at timestamptz, status_code int, response_excerpt text, error text, "
                "latency_ms int, next_attempt_at timestamptz)"
            ),
            {"doc": document},
        )

    def defer(
        self, delivery_ids: Sequence[int], token: uuid.UUID, due: datetime, hold_until: datetime
    ) -> None:
        """Give claimed deliveries back, due at ``due``, without counting an attempt."""
        self._session.execute(
            text(
                "UPDATE webhook_deliveries SET claimed_until = NULL, claim_token = NULL, "
                "next_attempt_at = :due, enqueued_until = :hold "
                "WHERE id = ANY(CAST(:ids AS bigint[])) AND claim_token = :token"
            ),
            {"ids": _ints(delivery_ids), "token": token, "due": due, "hold": hold_until},
        )

    def skip(self, delivery_ids: Sequence[int], now: datetime) -> None:
        if not delivery_ids:
            return
        self._session.execute(
            text(
                "UPDATE webhook_deliveries SET status = 'skipped', claimed_until = NULL, "
                "updated_at = :now WHERE id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": _ints(delivery_ids), "now": now},
        )

    def mark_endpoints(
        self,
        *,
        succeeded: Sequence[uuid.UUID],
        failed: Sequence[uuid.UUID],
        now: datetime,
    ) -> None:
        """A success clears ``failing_since``; a failure starts it if it is not running."""
        if succeeded:
            self._session.execute(
                text(
                    "UPDATE webhook_endpoints SET failing_since = NULL "
                    "WHERE id = ANY(CAST(:ids AS uuid[])) AND failing_since IS NOT NULL"
                ),
                {"ids": "{" + ",".join(str(i) for i in set(succeeded)) + "}"},
            )
        if failed:
            self._session.execute(
                text(
                    "UPDATE webhook_endpoints SET failing_since = :now "
                    "WHERE id = ANY(CAST(:ids AS uuid[])) AND failing_since IS NULL"
                ),
                {"ids": "{" + ",".join(str(i) for i in set(failed)) + "}", "now": now},
            )

    # --- the delivery log, retries and replays ------------------------------------

    def attempts(
        self, endpoint_id: uuid.UUID, *, before: int | None, limit: int
    ) -> list[AttemptRecord]:
        rows = self._session.execute(
            text(
                "SELECT a.id, a.delivery_id, d.event_id, e.type AS event_type, "
                "d.status AS delivery_status, a.at, a.status_code, a.response_excerpt, a.error, "
                "a.latency_ms, a.next_attempt_at FROM webhook_attempts a "
                "JOIN webhook_deliveries d ON d.id = a.delivery_id "
                "JOIN webhook_events e ON e.id = d.event_id "
                "WHERE a.endpoint_id = :endpoint AND (CAST(:before AS bigint) IS NULL "
                "OR a.id < CAST(:before AS bigint)) ORDER BY a.id DESC LIMIT :limit"
            ),
            {"endpoint": endpoint_id, "before": before, "limit": limit},
        ).all()
        return [
            AttemptRecord(
                id=int(r.id),
                delivery_id=int(r.delivery_id),
                event_id=int(r.event_id),
                event_type=r.event_type,
                delivery_status=r.delivery_status,
                at=r.at,
                status_code=r.status_code,
                response_excerpt=r.response_excerpt,
                error=r.error,
                latency_ms=int(r.latency_ms),
                next_attempt_at=r.next_attempt_at,
            )
            for r in rows
        ]

    def delivery_of(self, endpoint_id: uuid.UUID, delivery_id: int) -> tuple[int, str] | None:
        """(event id, status) of the endpoint's delivery, or None."""
        row = self._session.execute(
            text(
                "SELECT event_id, status FROM webhook_deliveries "
                "WHERE id = :id AND endpoint_id = :endpoint"
            ),
            {"id": delivery_id, "endpoint": endpoint_id},
        ).first()
        return (int(row.event_id), str(row.status)) if row is not None else None

    def purge_events_before(self, cutoff: datetime, limit: int) -> int:
        """Delete up to ``limit`` of the oldest events older than ``cutoff``; how many.

        Oldest by id, so each pass reads at most ``limit`` rows from the
        primary key and never scans the table (``at`` has no index, to keep
        the hot insert cheap). An event with an ``at`` out of step with its id
        waits until the rows before it are gone. Deliveries and attempts go
        with their event (ON DELETE CASCADE).
        """
        row = self._session.execute(
            text(
                "WITH oldest AS (SELECT id, at FROM webhook_events ORDER BY id LIMIT :limit "
                "FOR UPDATE SKIP LOCKED), "
                "gone AS (DELETE FROM webhook_events e USING oldest o "
                "WHERE e.id = o.id AND o.at < :cutoff RETURNING 1) "
                "SELECT count(*) AS n FROM gone"
            ),
            {"cutoff": cutoff, "limit": limit},
        ).one()
        return int(row.n)

    def relayed_event_ids(
        self,
        client_id: uuid.UUID,
        internal_types: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        first_opens_only: bool = False,
    ) -> list[int]:
        rows = self._session.execute(
            text(
                "SELECT id FROM webhook_events WHERE client_id = :client "
                "AND feed_seq IS NOT NULL AND type = ANY(CAST(:types AS text[])) "
                "AND at >= :start AND at < :end AND NOT (CAST(:first_only AS boolean) "
                "AND type = 'opened' "
                "AND COALESCE((detail->>'first_open')::boolean, false) = false) "
                "ORDER BY feed_seq"
            ),
            {
                "client": client_id,
                "first_only": first_opens_only,
                "types": "{" + ",".join(f'"{t}"' for t in internal_types) + "}",
                "start": start,
                "end": end,
            },
        ).all()
        return [int(row.id) for row in rows]

    def feed(
        self, client_id: uuid.UUID, internal_types: Sequence[str], after: int, limit: int
    ) -> list[OutboxEvent]:
        rows = self._session.execute(
            text(
                f"SELECT {_EVENT_COLUMNS} FROM webhook_events WHERE client_id = :client "  # noqa: S608 - constant column lists
                "AND feed_seq > :after AND type = ANY(CAST(:types AS text[])) "
                "ORDER BY feed_seq LIMIT :limit"
            ),
            {
                "client": client_id,
                "types": "{" + ",".join(f'"{t}"' for t in internal_types) + "}",
                "after": after,
                "limit": limit,
            },
        ).all()
        return [_event(row) for row in rows]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
