"""The worker's per-batch statements as fixed SQL (issue 8).

Each is a constant ``text()`` whose batch travels in a single JSON or array
parameter, so SQLAlchemy compiles it once per process and the statement
stays short whatever the batch (pg8000 stalls ~40 ms on statements over
about 8 KB: it does not set TCP_NODELAY). Before, the outcome write was an
``UPDATE ... FROM (VALUES ...)`` built anew per batch: ~7 ms, of which 2.2 ms
in PostgreSQL, the rest compiling it. The claim returned whole ORM rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from mailroom.adapters.db.array_literals import uuid_array
from mailroom.domain.feedback import Suppression, SuppressionReason
from mailroom.domain.model import EventType, Message, MessageStatus, SendOptions

# A scheduled message's record may be taken this much before its time: the
# scheduler's clock and PostgreSQL's may differ a little, and a record that
# came a moment early must not be dropped (issue 18).
SCHEDULED_EARLY_SECONDS = 2


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    """What one claim statement brings back for a batch."""

    messages: list[Message]
    # The provider order of each claimed message's client (None: the global one).
    orders: dict[uuid.UUID, list[str] | None]
    # The active suppressions matching any claimed message's recipients, or
    # None when they are not known for every message (the caller reads them).
    # Test traffic's entries only for test messages (issue 15).
    suppressions: list[Suppression] | None


# Same claim rule as SqlMessageRepository.claim: queued, or sending under an
# expired lease; or (issue 18) scheduled, released by the scheduler and due
# (a cancel and this claim are row updates of the same row: whichever
# commits first wins, the other's WHERE no longer holds). The join with
# clients brings each message's provider order back in the same round trip
# (the FK makes the join never drop a row); a concurrent claimer's lock is
# waited on and the WHERE re-checked on the newest row version, so two
# workers never both take a message. The last column screens the recipients
# against suppressions in the same round trip:
# the accepted message's recipient rows hold the bare addresses suppressions
# are keyed by (a message without any, written by hand, is screened the
# slower way by the caller). The JSON columns come back as one array: pg8000
# decodes each JSON value with its own json.loads call.
#
# Written so that only the primary keys can find the rows, whatever the
# statistics say (issue 8): the rule is a CASE, which the planner cannot
# match to the partial index of unfinished messages, and the screening is
# one correlated aggregate, which it cannot turn into a hash of the whole
# recipients table. With statistics from before a burst, the plain
# spelling of either scanned the entire backlog for every batch of ten.
_CLAIM = text(
    """
    UPDATE messages AS m
    SET status = 'sending',
        claim_token = CAST(:token AS uuid),
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        claims = m.claims + 1,
        updated_at = now()
    FROM clients AS c
    WHERE m.id = ANY(CAST(:ids AS uuid[]))
      AND c.id = m.client_id
      AND CASE m.status
              WHEN 'queued' THEN true
              WHEN 'sending' THEN m.lease_expires_at < now()
              WHEN 'scheduled' THEN m.enqueued_at IS NOT NULL
                                AND m.scheduled_at <= now() + make_interval(secs => :early_seconds)
              ELSE false
          END
      -- A cancelled batch's message is never taken (issue 17): the cancel
      -- marks its queued rows cancelled, and this re-check under the claim
      -- covers a row whose earlier claim expired mid-send.
      AND (m.batch_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM batches AS b
                          WHERE b.id = m.batch_id AND b.status = 'cancelled'))
      -- Issue 20: a message whose queue (as the claim gate read it) was
      -- paused since that read is not taken. Uncorrelated, so PostgreSQL
      -- evaluates it once per statement: one probe per queue of the batch.
      AND m.id <> ALL(ARRAY(
              SELECT g.message_id
              FROM unnest(CAST(:gate_ids AS uuid[]), CAST(:gate_queues AS uuid[]))
                   AS g(message_id, queue_id)
              JOIN queues AS q ON q.id = g.queue_id AND q.state = 'paused'))
    RETURNING m.id, m.client_id, m.trace_id, m.template_name, m.template_version,
              m.template_shared, m.from_address, m.subject, m.provider, m.provider_msg_id,
              m.attempts, m.last_error, m.created_at, m.sent_at, m.next_attempt_at, m.claims,
              m.is_test, m.scheduled_at,
              jsonb_build_array(
                  m.to_addresses, m.cc_addresses, m.bcc_addresses, m.reply_to, m.props,
                  m.metadata, c.provider_order,
                  (SELECT jsonb_build_object(
                              'recipients', count(*),
                              'suppressions', jsonb_agg(jsonb_build_object(
                                  'id', s.id, 'address', s.address, 'reason', s.reason,
                                  'client_id', s.client_id, 'expires_at', s.expires_at,
                                  'source', s.source, 'is_test', s.is_test))
                                  FILTER (WHERE s.id IS NOT NULL))
                   FROM message_recipients AS r
                   LEFT JOIN suppressions AS s
                     ON s.address = r.address
                    AND (s.client_id IS NULL OR s.client_id = m.client_id)
                    AND (s.expires_at IS NULL OR s.expires_at > now())
                    AND (NOT s.is_test OR m.is_test)
                   WHERE r.message_id = m.id),
                  m.options)
    """
)

# The outcomes and their events in one statement: the UPDATE writes only rows
# still held by the token (a taken-over claim is not overwritten), and the
# INSERT adds the events of exactly the rows written, in the order given. The
# ids come again as an array so that the rows are found by primary key: the
# planner cannot see into the JSON, and on a small or freshly grown table it
# chose to scan every message for the claim token (issue 8).
_RECORD = text(
    """
    WITH outcome AS (
        SELECT * FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS o(
            id uuid, status text, subject text, provider text, provider_msg_id text,
            attempts integer, last_error text, sent_at timestamptz,
            next_attempt_at timestamptz)
    ), written AS (
        UPDATE messages AS m
        SET status = outcome.status,
            subject = outcome.subject,
            provider = outcome.provider,
            provider_msg_id = outcome.provider_msg_id,
            attempts = outcome.attempts,
            last_error = outcome.last_error,
            sent_at = outcome.sent_at,
            next_attempt_at = outcome.next_attempt_at,
            claim_token = NULL,
            lease_expires_at = NULL,
            updated_at = now()
        FROM outcome
        WHERE m.id = ANY(CAST(:ids AS uuid[]))
          AND m.id = outcome.id
          AND m.claim_token = CAST(:token AS uuid)
        RETURNING m.id
    ), appended AS (
        INSERT INTO message_events (message_id, type, detail)
        SELECT (e.item ->> 'message_id')::uuid, e.item ->> 'type', e.item -> 'detail'
        FROM jsonb_array_elements(CAST(:events AS jsonb)) WITH ORDINALITY AS e(item, n)
        JOIN written ON written.id = (e.item ->> 'message_id')::uuid
        ORDER BY e.n
    )
    SELECT id FROM written
    """
)


def claim_for_send(
    session: Session,
    message_ids: Sequence[uuid.UUID],
    token: uuid.UUID,
    lease_seconds: int,
    gate_queues: Sequence[tuple[uuid.UUID, uuid.UUID]] = (),
) -> ClaimedBatch:
    """Claim like ``MessageRepository.claim``; also client orders and suppressions.

    Only what sending reads comes back (not ``updated_at`` or the lease).
    ``gate_queues``: (message id, queue id) as the claim gate read them; a
    message whose queue reads paused now is left out (issue 20).
    """
    if not message_ids:
        return ClaimedBatch([], {}, [])
    rows = session.execute(
        _CLAIM,
        {
            "ids": uuid_array(message_ids),
            "token": str(token),
            "lease_seconds": lease_seconds,
            "early_seconds": SCHEDULED_EARLY_SECONDS,
            "gate_ids": uuid_array([message_id for message_id, _ in gate_queues]),
            "gate_queues": uuid_array([queue_id for _, queue_id in gate_queues]),
        },
    ).all()
    messages: list[Message] = []
    orders: dict[uuid.UUID, list[str] | None] = {}
    suppressions: dict[int, Suppression] | None = {}
    for row in rows:
        (
            message_id,
            client_id,
            trace_id,
            template_name,
            template_version,
            template_shared,
            from_address,
            subject,
            provider,
            provider_msg_id,
            attempts,
            last_error,
            created_at,
            sent_at,
            next_attempt_at,
            claims,
            is_test,
            scheduled_at,
            documents,
        ) = row
        to, cc, bcc, reply_to, props, metadata, provider_order, screening, options = documents
        message_uuid = _uuid(message_id)
        client_uuid = _uuid(client_id)
        messages.append(
            Message(
                id=message_uuid,
                client_id=client_uuid,
                trace_id=trace_id,
                template_name=template_name,
                template_version=template_version,
                template_shared=template_shared,
                from_address=from_address,
                to=list(to),
                cc=list(cc),
                bcc=list(bcc),
                reply_to=list(reply_to),
                subject=subject,
                props=dict(props),
                metadata=dict(metadata),
                status=MessageStatus.SENDING,
                provider=provider,
                provider_msg_id=provider_msg_id,
                attempts=attempts,
                last_error=last_error,
                created_at=created_at,
                sent_at=sent_at,
                next_attempt_at=next_attempt_at,
                claims=claims,
                is_test=bool(is_test),
                options=SendOptions.from_document(options),
                scheduled_at=scheduled_at,
            )
        )
        orders[client_uuid] = list(provider_order) if provider_order is not None else None
        if not screening["recipients"]:
            suppressions = None
        elif suppressions is not None:
            for entry in screening["suppressions"] or ():
                suppressions[int(entry["id"])] = _suppression(entry)
    return ClaimedBatch(
        messages, orders, list(suppressions.values()) if suppressions is not None else None
    )


def _suppression(entry: dict[str, Any]) -> Suppression:
    client_id, expires_at = entry["client_id"], entry["expires_at"]
    return Suppression(
        id=int(entry["id"]),
        address=entry["address"],
        reason=SuppressionReason(entry["reason"]),
        client_id=_uuid(client_id) if client_id is not None else None,
        expires_at=datetime.fromisoformat(expires_at) if expires_at is not None else None,
        source=entry["source"],
        is_test=bool(entry.get("is_test", False)),
    )


def record_outcomes(
    session: Session,
    token: uuid.UUID,
    messages: Sequence[Message],
    events: Sequence[tuple[uuid.UUID, EventType, dict[str, Any]]],
) -> set[uuid.UUID]:
    """Write the outcomes of the messages ``token`` still holds, and their events."""
    if not messages:
        return set()
    outcomes = json.dumps(
        [
            {
                "id": str(message.id),
                "status": message.status.value,
                "subject": message.subject,
                "provider": message.provider,
                "provider_msg_id": message.provider_msg_id,
                "attempts": message.attempts,
                "last_error": message.last_error,
                "sent_at": _iso(message.sent_at),
                "next_attempt_at": _iso(message.next_attempt_at),
            }
            for message in messages
        ]
    )
    appended = json.dumps(
        [
            {"message_id": str(message_id), "type": event_type.value, "detail": detail}
            for message_id, event_type, detail in events
        ]
    )
    rows = session.execute(
        _RECORD,
        {
            "ids": uuid_array([message.id for message in messages]),
            "outcomes": outcomes,
            "events": appended,
            "token": str(token),
        },
    ).scalars()
    return {_uuid(value) for value in rows}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _uuid(value: object) -> uuid.UUID:
    # pg8000 returns uuid columns as uuid.UUID already; text is accepted too.
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
