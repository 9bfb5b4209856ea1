"""Repositories for delivery feedback: provider events, recipients, suppressions, listings.

Same pattern as repositories.py: an abstract interface per concern (unit tests
subclass it in memory) and one PostgreSQL implementation in SQLAlchemy Core.
The writes that must hold under concurrency are single statements: the
deduplicating insert, the guarded status update and the rank-guarded upsert.
"""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Row,
    Text,
    and_,
    any_,
    bindparam,
    delete,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from mailroom.adapters.db.array_literals import text_array, uuid_array
from mailroom.adapters.db.repositories import _message
from mailroom.adapters.db.tables import (
    DeliveryEventRow,
    MessageRecipientRow,
    MessageRow,
    SuppressionRow,
)
from mailroom.domain.feedback import (
    RECIPIENT_RANK,
    DeliveryEvent,
    FeedbackEventType,
    RecipientOutcome,
    RecipientStatus,
    RejectReason,
    Suppression,
    SuppressionReason,
    SuppressionScope,
)
from mailroom.domain.model import Message, MessageStatus


@dataclass(frozen=True, slots=True)
class SuppressionFilter:
    scope: SuppressionScope | None = None  # None: both
    client_id: uuid.UUID | None = None  # with scope CLIENT: only this client's
    address: str | None = None
    reason: SuppressionReason | None = None
    include_expired: bool = False
    # What one client may see (``scope`` then unused): its own entries and the
    # active global ones. A reason filter leaves the global ones out: the
    # client is not told why an address is suppressed for everyone.
    visible_to: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class MessageFilter:
    status: MessageStatus | None = None
    recipient: str | None = None  # a bare, lowercased address
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until


@dataclass(frozen=True, slots=True)
class MessageState:
    """What reconciling an event needs of its message (not the whole row)."""

    id: uuid.UUID
    status: MessageStatus
    client_id: uuid.UUID
    is_test: bool


class FeedbackRepository(abc.ABC):
    """Provider events, and the two lookups and one update that reconciliation needs."""

    @abc.abstractmethod
    def add(self, event: DeliveryEvent, *, message_id: uuid.UUID | None) -> bool:
        """Store the event; False (and nothing stored) if it was stored before."""

    @abc.abstractmethod
    def find_message_id(self, provider: str, provider_msg_ids: list[str]) -> uuid.UUID | None:
        """The message this provider gave one of these ids to."""

    @abc.abstractmethod
    def claim_orphans(
        self, provider: str, provider_msg_ids: list[str], message_id: uuid.UUID
    ) -> list[DeliveryEvent]:
        """Attach earlier orphans with these provider ids to the message; return them."""

    @abc.abstractmethod
    def advance_status(
        self, message_id: uuid.UUID, target: MessageStatus, allowed_from: list[MessageStatus]
    ) -> bool:
        """Set the status only if it is still one of ``allowed_from``; True if it changed."""

    @abc.abstractmethod
    def for_message(self, message_id: uuid.UUID) -> list[DeliveryEvent]: ...

    @abc.abstractmethod
    def count_orphans(self) -> int: ...

    @abc.abstractmethod
    def message_states(self, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, MessageState]:
        """The status, client and mode of each of these messages that exists."""

    # The batched forms reconciliation uses (issue 21): PostgreSQL answers
    # each in one statement whatever the batch's size; these defaults, for
    # the in-memory fakes, call the single forms one at a time.

    def find_message_ids(
        self, provider_msg_ids: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], uuid.UUID]:
        """The message each (provider, provider message id) names, for those that name one."""
        found: dict[tuple[str, str], uuid.UUID] = {}
        for provider, provider_msg_id in provider_msg_ids:
            message_id = self.find_message_id(provider, [provider_msg_id])
            if message_id is not None:
                found[(provider, provider_msg_id)] = message_id
        return found

    def locate(
        self, provider_msg_ids: Sequence[tuple[str, str]], message_ids: Sequence[uuid.UUID]
    ) -> tuple[dict[tuple[str, str], uuid.UUID], dict[uuid.UUID, MessageState]]:
        """``find_message_ids`` for the pairs, and the state of every message found
        by them or named in ``message_ids``; PostgreSQL answers in one statement."""
        found = self.find_message_ids(provider_msg_ids)
        return found, self.message_states(sorted({*found.values(), *message_ids}))

    def add_many(self, events: Sequence[tuple[DeliveryEvent, uuid.UUID | None]]) -> list[bool]:
        """``add`` each (no two with the same key); True where the event was new."""
        return [self.add(event, message_id=message_id) for event, message_id in events]

    def claim_orphans_many(
        self, claims: Sequence[tuple[str, str, uuid.UUID]]
    ) -> dict[uuid.UUID, list[DeliveryEvent]]:
        """``claim_orphans`` for each (provider, provider message id, message id)."""
        claimed: dict[uuid.UUID, list[DeliveryEvent]] = {}
        for provider, provider_msg_id, message_id in claims:
            found = self.claim_orphans(provider, [provider_msg_id], message_id)
            if found:
                claimed.setdefault(message_id, []).extend(found)
        return claimed

    def advance_statuses(
        self, targets: Sequence[tuple[uuid.UUID, MessageStatus, list[MessageStatus]]]
    ) -> set[uuid.UUID]:
        """``advance_status`` for each (message id, target, allowed from); the ids changed."""
        return {
            message_id
            for message_id, target, allowed_from in targets
            if self.advance_status(message_id, target, allowed_from)
        }


class RecipientRepository(abc.ABC):
    @abc.abstractmethod
    def add_all(self, message_id: uuid.UUID, recipients: list[tuple[str, str]]) -> None:
        """One row per (address, kind), status unknown; existing rows are kept."""

    @abc.abstractmethod
    def record(self, message_id: uuid.UUID, outcome: RecipientOutcome) -> bool:
        """Upsert the outcome if it ranks above what is stored; True if it was written."""

    @abc.abstractmethod
    def for_message(self, message_id: uuid.UUID) -> list[RecipientOutcome]: ...

    def record_many(self, outcomes: Sequence[tuple[uuid.UUID, RecipientOutcome]]) -> None:
        """``record`` each (one per message and address); PostgreSQL in one statement."""
        for message_id, outcome in outcomes:
            self.record(message_id, outcome)


class SuppressionRepository(abc.ABC):
    @abc.abstractmethod
    def upsert(self, suppression: Suppression) -> Suppression:
        """Add the entry, or replace reason, expiry and source of the same (client, address)."""

    @abc.abstractmethod
    def active_for(
        self,
        client_id: uuid.UUID,
        addresses: list[str],
        now: datetime,
        *,
        include_test: bool = False,
    ) -> list[Suppression]:
        """Unexpired entries, global or this client's, for any of these bare addresses.

        Entries test traffic created only with ``include_test`` (a test message's screening).
        """

    def active_for_clients(
        self, client_ids: Sequence[uuid.UUID], addresses: list[str], now: datetime
    ) -> list[Suppression]:
        """``active_for`` for several clients at once: global entries and any of theirs.

        Test traffic's entries included: the caller keeps those that apply to
        each message (``Suppression.applies_to``). The worker screens a whole
        batch with it; the PostgreSQL repository answers in one statement,
        this default with one call per client.
        """
        found: dict[int | None, Suppression] = {}
        extra: list[Suppression] = []
        for client_id in dict.fromkeys(client_ids):
            for entry in self.active_for(client_id, addresses, now, include_test=True):
                if entry.id is None:
                    extra.append(entry)
                else:
                    found[entry.id] = entry
        return [*found.values(), *extra]

    def upsert_many(self, entries: Sequence[Suppression]) -> tuple[int, int]:
        """``upsert`` each (one address at most once); (created, updated).

        The PostgreSQL repository writes them in a few statements; this
        default, for in-memory fakes, one at a time.
        """
        created = 0
        for entry in entries:
            where = SuppressionFilter(
                scope=entry.scope,
                client_id=entry.client_id,
                address=entry.address,
                include_expired=True,
            )
            existed = bool(self.list(where, now=datetime.now(UTC), after_id=None, limit=1))
            self.upsert(entry)
            created += not existed
        return created, len(entries) - created

    @abc.abstractmethod
    def remove(self, address: str, client_id: uuid.UUID | None) -> int: ...

    @abc.abstractmethod
    def list(
        self, where: SuppressionFilter, *, now: datetime, after_id: int | None, limit: int
    ) -> list[Suppression]:
        """Entries by ascending id, after ``after_id`` (keyset pagination)."""


class MessageQueryRepository(abc.ABC):
    @abc.abstractmethod
    def list_for_client(
        self,
        client_id: uuid.UUID,
        where: MessageFilter,
        *,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Message]:
        """Newest first, strictly older than ``before`` (created_at, id) when given."""


# --- PostgreSQL ---------------------------------------------------------------

# Batched reconciliation (issue 21): a batch's rows travel as one JSON
# document (jsonb_to_recordset) or as array literals, so a statement costs
# the same few parameters whatever the batch's size, and pg8000 escapes no
# value one by one. Rows are written in key order: two transactions writing
# overlapping batches then take their row locks in the same order and wait
# for each other instead of deadlocking.
_INSERT_CHUNK = 1000
_FIND_MESSAGE_IDS = text(
    "SELECT provider, provider_msg_id, id FROM messages "
    "WHERE provider = ANY(CAST(:providers AS text[])) "
    "AND provider_msg_id = ANY(CAST(:ids AS text[]))"
)
# Both ways to find a batch's messages, and what reconciling needs of them.
_LOCATE = text(
    "SELECT id, provider, provider_msg_id, status, client_id, is_test FROM messages "
    "WHERE (provider = ANY(CAST(:providers AS text[])) "
    "AND provider_msg_id = ANY(CAST(:ids AS text[]))) "
    "OR id = ANY(CAST(:messages AS uuid[]))"
)
_MESSAGE_STATES = text(
    "SELECT id, status, client_id, is_test FROM messages WHERE id = ANY(CAST(:ids AS uuid[]))"
)
_ADD_EVENTS = text(
    """
    INSERT INTO delivery_events (provider, provider_event_id, recipient, event_type,
        occurred_at, provider_msg_id, message_id_header, message_id, reject_reason,
        response_text, description, raw)
    SELECT provider, provider_event_id, recipient, event_type, occurred_at, provider_msg_id,
        message_id_header, message_id, reject_reason, response_text, description, raw
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(provider text, provider_event_id text,
        recipient text, event_type text, occurred_at timestamptz, provider_msg_id text,
        message_id_header text, message_id uuid, reject_reason text, response_text text,
        description text, raw jsonb)
    ORDER BY provider, provider_event_id, recipient
    ON CONFLICT (provider, provider_event_id, recipient) DO NOTHING
    RETURNING provider, provider_event_id, recipient
    """
)
_CLAIM_ORPHANS = text(
    """
    UPDATE delivery_events AS d SET message_id = c.message_id
    FROM unnest(CAST(:providers AS text[]), CAST(:ids AS text[]), CAST(:messages AS uuid[]))
        AS c(provider, provider_msg_id, message_id)
    WHERE d.message_id IS NULL AND d.provider = c.provider
      AND d.provider_msg_id = c.provider_msg_id
    RETURNING d.id
    """
)
_ADVANCE_STATUSES = text(
    "UPDATE messages SET status = :target, updated_at = now() "
    "WHERE id = ANY(CAST(:ids AS uuid[])) AND status = ANY(CAST(:allowed AS text[])) "
    "RETURNING id"
)
# Forward only, as ``record``: a stored outcome of the same or a higher rank stays.
_RECORD_RECIPIENTS = text(
    """
    INSERT INTO message_recipients AS m (message_id, address, kind, status, rank,
        reject_reason, response_text)
    SELECT message_id, address, kind, status, rank, reject_reason, response_text
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(message_id uuid, address text,
        kind text, status text, rank int, reject_reason text, response_text text)
    ORDER BY message_id, address
    ON CONFLICT (message_id, address) DO UPDATE SET
        status = excluded.status, rank = excluded.rank, reject_reason = excluded.reject_reason,
        response_text = excluded.response_text, updated_at = now()
    WHERE m.rank < excluded.rank
    """
)


def _delivery_row(event: DeliveryEvent, message_id: uuid.UUID | None) -> dict[str, Any]:
    return {
        "provider": event.provider,
        "provider_event_id": event.event_id,
        "recipient": event.recipient_address or "",
        "event_type": event.event_type.value,
        "occurred_at": event.timestamp.isoformat() if event.timestamp else None,
        "provider_msg_id": event.message_id,
        "message_id_header": event.message_id_header,
        "message_id": str(message_id) if message_id else None,
        "reject_reason": event.reject_reason.value if event.reject_reason else None,
        "response_text": event.mta_response,
        "description": event.description,
        "raw": event.raw,
    }


class SqlFeedbackRepository(FeedbackRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, event: DeliveryEvent, *, message_id: uuid.UUID | None) -> bool:
        statement = (
            pg_insert(DeliveryEventRow)
            .values(
                provider=event.provider,
                provider_event_id=event.event_id,
                recipient=event.recipient_address or "",
                event_type=event.event_type.value,
                occurred_at=event.timestamp,
                provider_msg_id=event.message_id,
                message_id_header=event.message_id_header,
                message_id=message_id,
                reject_reason=event.reject_reason.value if event.reject_reason else None,
                response_text=event.mta_response,
                description=event.description,
                raw=event.raw,
            )
            .on_conflict_do_nothing(index_elements=["provider", "provider_event_id", "recipient"])
            .returning(DeliveryEventRow.id)
        )
        return self._session.execute(statement).scalar() is not None

    def find_message_id(self, provider: str, provider_msg_ids: list[str]) -> uuid.UUID | None:
        return self._session.execute(
            select(MessageRow.id)
            .where(
                MessageRow.provider == provider,
                MessageRow.provider_msg_id.in_(provider_msg_ids),
            )
            .limit(1)
        ).scalar()

    def claim_orphans(
        self, provider: str, provider_msg_ids: list[str], message_id: uuid.UUID
    ) -> list[DeliveryEvent]:
        rows = self._session.execute(
            update(DeliveryEventRow)
            .where(
                DeliveryEventRow.message_id.is_(None),
                DeliveryEventRow.provider == provider,
                DeliveryEventRow.provider_msg_id.in_(provider_msg_ids),
            )
            .values(message_id=message_id)
            .returning(DeliveryEventRow)
        ).scalars()
        return sorted(
            (_delivery_event(row) for row in rows), key=lambda e: (e.timestamp is None, e.timestamp)
        )

    def advance_status(
        self, message_id: uuid.UUID, target: MessageStatus, allowed_from: list[MessageStatus]
    ) -> bool:
        result = self._session.execute(
            update(MessageRow)
            .where(
                MessageRow.id == message_id,
                MessageRow.status.in_([status.value for status in allowed_from]),
            )
            .values(status=target.value, updated_at=func.now())
            .returning(MessageRow.id)
        )
        return result.scalar() is not None

    def for_message(self, message_id: uuid.UUID) -> list[DeliveryEvent]:
        rows = self._session.execute(
            select(DeliveryEventRow)
            .where(DeliveryEventRow.message_id == message_id)
            .order_by(DeliveryEventRow.id)
        ).scalars()
        return [_delivery_event(row) for row in rows]

    def count_orphans(self) -> int:
        return int(
            self._session.execute(
                select(func.count()).where(DeliveryEventRow.message_id.is_(None))
            ).scalar_one()
        )

    def find_message_ids(
        self, provider_msg_ids: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], uuid.UUID]:
        if not provider_msg_ids:
            return {}
        rows = self._session.execute(
            _FIND_MESSAGE_IDS,
            {
                "providers": text_array(sorted({p for p, _ in provider_msg_ids})),
                "ids": text_array(sorted({i for _, i in provider_msg_ids})),
            },
        )
        wanted = set(provider_msg_ids)
        return {(p, i): m for p, i, m in rows if (p, i) in wanted}

    def locate(
        self, provider_msg_ids: Sequence[tuple[str, str]], message_ids: Sequence[uuid.UUID]
    ) -> tuple[dict[tuple[str, str], uuid.UUID], dict[uuid.UUID, MessageState]]:
        if not provider_msg_ids and not message_ids:
            return {}, {}
        rows = self._session.execute(
            _LOCATE,
            {
                "providers": text_array(sorted({p for p, _ in provider_msg_ids})),
                "ids": text_array(sorted({i for _, i in provider_msg_ids})),
                "messages": uuid_array(sorted(set(message_ids))),
            },
        ).all()
        wanted = set(provider_msg_ids)
        found = {
            (row.provider, row.provider_msg_id): row.id
            for row in rows
            if (row.provider, row.provider_msg_id) in wanted
        }
        states = {
            row.id: MessageState(row.id, MessageStatus(row.status), row.client_id, row.is_test)
            for row in rows
        }
        return found, states

    def message_states(self, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, MessageState]:
        if not message_ids:
            return {}
        rows = self._session.execute(_MESSAGE_STATES, {"ids": uuid_array(message_ids)})
        return {
            row.id: MessageState(row.id, MessageStatus(row.status), row.client_id, row.is_test)
            for row in rows
        }

    def add_many(self, events: Sequence[tuple[DeliveryEvent, uuid.UUID | None]]) -> list[bool]:
        if not events:
            return []
        rows = [_delivery_row(event, message_id) for event, message_id in events]
        added: set[tuple[str, str, str]] = set()
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start : start + _INSERT_CHUNK]
            result = self._session.execute(_ADD_EVENTS, {"rows": json.dumps(chunk, default=str)})
            added.update((p, e, r) for p, e, r in result)
        return [
            (row["provider"], row["provider_event_id"], row["recipient"]) in added for row in rows
        ]

    def claim_orphans_many(
        self, claims: Sequence[tuple[str, str, uuid.UUID]]
    ) -> dict[uuid.UUID, list[DeliveryEvent]]:
        if not claims:
            return {}
        ordered = sorted(set(claims))
        rows = self._session.execute(
            _CLAIM_ORPHANS,
            {
                "providers": text_array(c[0] for c in ordered),
                "ids": text_array(c[1] for c in ordered),
                "messages": uuid_array(c[2] for c in ordered),
            },
        ).scalars()
        claimed: dict[uuid.UUID, list[DeliveryEvent]] = {}
        for row in self._session.execute(
            select(DeliveryEventRow).where(DeliveryEventRow.id.in_(list(rows)))
        ).scalars():
            assert row.message_id is not None
            claimed.setdefault(row.message_id, []).append(_delivery_event(row))
        for found in claimed.values():
            found.sort(key=lambda e: (e.timestamp is None, e.timestamp))
        return claimed

    def advance_statuses(
        self, targets: Sequence[tuple[uuid.UUID, MessageStatus, list[MessageStatus]]]
    ) -> set[uuid.UUID]:
        # One statement per target status (four at most: delivered, bounced,
        # failed, spam), each guarded as ``advance_status`` is.
        by_target: dict[tuple[MessageStatus, tuple[MessageStatus, ...]], list[uuid.UUID]] = {}
        for message_id, target, allowed_from in targets:
            by_target.setdefault((target, tuple(allowed_from)), []).append(message_id)
        changed: set[uuid.UUID] = set()
        for (target, allowed), message_ids in by_target.items():
            changed.update(
                self._session.execute(
                    _ADVANCE_STATUSES,
                    {
                        "ids": uuid_array(sorted(message_ids)),
                        "target": target.value,
                        "allowed": text_array(status.value for status in allowed),
                    },
                ).scalars()
            )
        return changed


class SqlRecipientRepository(RecipientRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add_all(self, message_id: uuid.UUID, recipients: list[tuple[str, str]]) -> None:
        if not recipients:
            return
        self._session.execute(
            pg_insert(MessageRecipientRow)
            .values(
                [
                    {"message_id": message_id, "address": address, "kind": kind}
                    for address, kind in recipients
                ]
            )
            .on_conflict_do_nothing(index_elements=["message_id", "address"])
        )

    def record(self, message_id: uuid.UUID, outcome: RecipientOutcome) -> bool:
        assert outcome.status is not None, "record a known outcome"
        insert = pg_insert(MessageRecipientRow).values(
            message_id=message_id,
            address=outcome.address,
            kind=outcome.kind,
            status=outcome.status.value,
            rank=RECIPIENT_RANK[outcome.status],
            reject_reason=outcome.reject_reason.value if outcome.reject_reason else None,
            response_text=outcome.response,
        )
        statement = insert.on_conflict_do_update(
            index_elements=["message_id", "address"],
            set_={
                "status": insert.excluded.status,
                "rank": insert.excluded.rank,
                "reject_reason": insert.excluded.reject_reason,
                "response_text": insert.excluded.response_text,
                "updated_at": func.now(),
            },
            # Forward only, in one statement: a concurrent lower-ranked event
            # cannot overwrite a higher one whatever the interleaving.
            where=MessageRecipientRow.rank < insert.excluded.rank,
        ).returning(MessageRecipientRow.address)
        return self._session.execute(statement).scalar() is not None

    def record_many(self, outcomes: Sequence[tuple[uuid.UUID, RecipientOutcome]]) -> None:
        if not outcomes:
            return
        rows = [
            {
                "message_id": str(message_id),
                "address": outcome.address,
                "kind": outcome.kind,
                "status": outcome.status.value if outcome.status else None,
                "rank": RECIPIENT_RANK[outcome.status] if outcome.status else 0,
                "reject_reason": outcome.reject_reason.value if outcome.reject_reason else None,
                "response_text": outcome.response,
            }
            for message_id, outcome in outcomes
        ]
        for start in range(0, len(rows), _INSERT_CHUNK):
            self._session.execute(
                _RECORD_RECIPIENTS, {"rows": json.dumps(rows[start : start + _INSERT_CHUNK])}
            )

    def for_message(self, message_id: uuid.UUID) -> list[RecipientOutcome]:
        rows = self._session.execute(
            select(MessageRecipientRow)
            .where(MessageRecipientRow.message_id == message_id)
            .order_by(MessageRecipientRow.address)
        ).scalars()
        return [
            RecipientOutcome(
                address=row.address,
                status=RecipientStatus(row.status) if row.status else None,
                kind=row.kind,
                reject_reason=RejectReason(row.reject_reason) if row.reject_reason else None,
                response=row.response_text,
                updated_at=row.updated_at,
            )
            for row in rows
        ]


# The send API's suppression check, built once: an array parameter (one bind
# however many addresses) keeps the SQL text the same for every request, so
# SQLAlchemy neither rebuilds nor recompiles it (issue 8).
# Selected from the table, not the ORM entity: plain rows, without the ORM's
# loading machinery, which was half of this lookup's time in the send API (issue 8).
_SUPPRESSIONS = SuppressionRow.__table__
_ACTIVE_FOR = select(_SUPPRESSIONS).where(
    SuppressionRow.address == any_(bindparam("addresses", type_=ARRAY(Text))),
    or_(
        SuppressionRow.client_id.is_(None),
        SuppressionRow.client_id == bindparam("client_id", type_=PG_UUID(as_uuid=True)),
    ),
    or_(
        SuppressionRow.expires_at.is_(None),
        SuppressionRow.expires_at > bindparam("now", type_=DateTime(timezone=True)),
    ),
    # Test traffic's entries screen test messages only (issue 15).
    or_(SuppressionRow.is_test.is_(false()), bindparam("include_test", type_=Boolean)),
)


class SqlSuppressionRepository(SuppressionRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def upsert(self, suppression: Suppression) -> Suppression:
        statement = _upsert([suppression]).returning(SuppressionRow)
        return suppression_of(self._session.execute(statement).scalar_one())

    def upsert_many(self, entries: Sequence[Suppression]) -> tuple[int, int]:
        created = 0
        # Well under PostgreSQL's 65,535 bind parameters per statement.
        for start in range(0, len(entries), _UPSERT_CHUNK):
            statement = _upsert(entries[start : start + _UPSERT_CHUNK]).returning(
                # xmax is 0 on a row this statement inserted, set on one it updated.
                literal_column("(xmax = 0)", Boolean)
            )
            created += sum(1 for (inserted,) in self._session.execute(statement) if inserted)
        return created, len(entries) - created

    def active_for(
        self,
        client_id: uuid.UUID,
        addresses: list[str],
        now: datetime,
        *,
        include_test: bool = False,
    ) -> list[Suppression]:
        if not addresses:
            return []
        rows = self._session.execute(
            _ACTIVE_FOR,
            {
                "addresses": addresses,
                "client_id": client_id,
                "now": now,
                "include_test": include_test,
            },
        ).all()
        return [suppression_of(row) for row in rows]

    def active_for_clients(
        self, client_ids: Sequence[uuid.UUID], addresses: list[str], now: datetime
    ) -> list[Suppression]:
        if not addresses or not client_ids:
            return []
        rows = self._session.execute(
            select(_SUPPRESSIONS).where(
                SuppressionRow.address.in_(addresses),
                or_(
                    SuppressionRow.client_id.is_(None),
                    SuppressionRow.client_id.in_(list(dict.fromkeys(client_ids))),
                ),
                or_(SuppressionRow.expires_at.is_(None), SuppressionRow.expires_at > now),
            )
        ).all()
        return [suppression_of(row) for row in rows]

    def remove(self, address: str, client_id: uuid.UUID | None) -> int:
        scope = (
            SuppressionRow.client_id.is_(None)
            if client_id is None
            else SuppressionRow.client_id == client_id
        )
        result = self._session.execute(
            delete(SuppressionRow)
            .where(SuppressionRow.address == address, scope)
            .returning(SuppressionRow.id)
        )
        return len(result.all())

    def list(
        self, where: SuppressionFilter, *, now: datetime, after_id: int | None, limit: int
    ) -> list[Suppression]:
        conditions: list[ColumnElement[bool]] = []
        if where.visible_to is not None:
            conditions.append(_visible_to(where, now))
        elif where.scope is SuppressionScope.GLOBAL:
            conditions.append(SuppressionRow.client_id.is_(None))
        elif where.scope is SuppressionScope.CLIENT:
            conditions.append(
                SuppressionRow.client_id == where.client_id
                if where.client_id
                else SuppressionRow.client_id.is_not(None)
            )
        if where.address:
            conditions.append(SuppressionRow.address == where.address)
        if where.reason:
            conditions.append(SuppressionRow.reason == where.reason.value)
        if not where.include_expired and where.visible_to is None:
            conditions.append(
                or_(SuppressionRow.expires_at.is_(None), SuppressionRow.expires_at > now)
            )
        if after_id is not None:
            conditions.append(SuppressionRow.id > after_id)
        rows = self._session.execute(
            select(SuppressionRow).where(and_(*conditions)).order_by(SuppressionRow.id).limit(limit)
        ).scalars()
        return [suppression_of(row) for row in rows]


_UPSERT_CHUNK = 1000


def _upsert(entries: Sequence[Suppression]) -> Any:
    """Add each entry, or replace reason, expiry and source (and a given note) of its twin."""
    insert = pg_insert(SuppressionRow).values(
        [
            {
                "client_id": entry.client_id,
                "address": entry.address,
                "reason": entry.reason.value,
                "source": entry.source,
                "note": entry.note,
                "expires_at": entry.expires_at,
                "is_test": entry.is_test,
            }
            for entry in entries
        ]
    )
    return insert.on_conflict_do_update(
        # A test entry and a live one for the same address are two rows (test mode).
        index_elements=["client_id", "address", "is_test"],
        set_={
            "reason": insert.excluded.reason,
            "source": insert.excluded.source,
            "note": func.coalesce(insert.excluded.note, SuppressionRow.note),
            "expires_at": insert.excluded.expires_at,
            "updated_at": func.now(),
        },
    )


def _visible_to(where: SuppressionFilter, now: datetime) -> ColumnElement[bool]:
    active = or_(SuppressionRow.expires_at.is_(None), SuppressionRow.expires_at > now)
    own = SuppressionRow.client_id == where.visible_to
    if not where.include_expired:
        own = and_(own, active)
    if where.reason is not None:
        return own
    return or_(own, and_(SuppressionRow.client_id.is_(None), active))


class SqlMessageQueryRepository(MessageQueryRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def list_for_client(
        self,
        client_id: uuid.UUID,
        where: MessageFilter,
        *,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Message]:
        query = select(MessageRow).where(MessageRow.client_id == client_id)
        if where.status is not None:
            query = query.where(MessageRow.status == where.status.value)
        if where.since is not None:
            query = query.where(MessageRow.created_at >= where.since)
        if where.until is not None:
            query = query.where(MessageRow.created_at < where.until)
        if where.recipient:
            query = query.where(
                MessageRow.id.in_(
                    select(MessageRecipientRow.message_id).where(
                        MessageRecipientRow.address == where.recipient
                    )
                )
            )
        if before is not None:
            # Row-value comparison: the keyset cursor stays exact when
            # several messages share a created_at.
            query = query.where(tuple_(MessageRow.created_at, MessageRow.id) < tuple_(*before))
        rows = self._session.execute(
            query.order_by(MessageRow.created_at.desc(), MessageRow.id.desc()).limit(limit)
        ).scalars()
        return [_message(row) for row in rows]


def _delivery_event(row: DeliveryEventRow) -> DeliveryEvent:
    return DeliveryEvent(
        provider=row.provider,
        event_type=FeedbackEventType(row.event_type),
        event_id=row.provider_event_id,
        timestamp=row.occurred_at,
        message_id=row.provider_msg_id,
        recipient=row.recipient or None,
        reject_reason=RejectReason(row.reject_reason) if row.reject_reason else None,
        mta_response=row.response_text,
        description=row.description,
        message_id_header=row.message_id_header,
        raw=dict(row.raw),
    )


def suppression_of(row: SuppressionRow | Row[Any]) -> Suppression:
    return Suppression(
        id=row.id,
        address=row.address,
        reason=SuppressionReason(row.reason),
        client_id=row.client_id,
        expires_at=row.expires_at,
        source=row.source,
        note=row.note,
        created_at=row.created_at,
        updated_at=row.updated_at,
        is_test=row.is_test,
    )
