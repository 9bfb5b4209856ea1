"""Repositories: how services read and write clients and messages.

Each has an abstract interface (unit tests subclass it with in-memory fakes)
and one PostgreSQL implementation written with SQLAlchemy 2 Core statements,
which map straight onto the domain dataclasses without ORM identity tracking.
"""

from __future__ import annotations

import abc
import contextlib
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Exists

from mailroom.adapters.db import batch_statements
from mailroom.adapters.db.batch_statements import ClaimedBatch
from mailroom.adapters.db.tables import (
    CLIENT_NAME_INDEX,
    ApiKeyRow,
    BatchRow,
    ClientRow,
    MessageEventRow,
    MessageRow,
)
from mailroom.domain.errors import ClientNameTaken
from mailroom.domain.model import (
    Client,
    ClientStatus,
    EventType,
    Message,
    MessageEvent,
    MessageStatus,
    SendOptions,
)

UNFINISHED = (MessageStatus.QUEUED.value, MessageStatus.SENDING.value)


class ClientRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, client: Client) -> None: ...

    @abc.abstractmethod
    def get(self, client_id: uuid.UUID) -> Client | None: ...

    @abc.abstractmethod
    def get_by_api_key(self, api_key: str) -> Client | None: ...

    @abc.abstractmethod
    def list(self, status: ClientStatus | None = None) -> list[Client]:
        """Every client (or those with ``status``), oldest first."""

    @abc.abstractmethod
    def save(self, client: Client) -> None:
        """Persist what an admin may change: name, limits, order, status, secrets."""

    @abc.abstractmethod
    def touch_last_used(self, client_id: uuid.UUID, at: datetime) -> None: ...

    def get_for_update(self, client_id: uuid.UUID) -> Client | None:
        """``get``, holding the row until commit so concurrent admin changes queue up."""
        return self.get(client_id)


class MessageRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, message: Message) -> None: ...

    @abc.abstractmethod
    def get(self, message_id: uuid.UUID) -> Message | None: ...

    @abc.abstractmethod
    def save_outcome(self, message: Message) -> None:
        """Persist status, provider, attempts, subject and error after a send attempt."""

    @abc.abstractmethod
    def append_event(
        self, message_id: uuid.UUID, event_type: EventType, detail: dict[str, Any]
    ) -> None: ...

    @abc.abstractmethod
    def events(self, message_id: uuid.UUID) -> list[MessageEvent]: ...

    @abc.abstractmethod
    def count_accepted(self, client_id: uuid.UUID, start: datetime, end: datetime) -> int:
        """Messages the client had accepted in [start, end): what its quota counts.

        Accepted means an ``accepted`` event: rows written for a refusal (every
        recipient suppressed) have none. A message whose enqueue then failed
        was answered 503, so its quota charge was given back and it does not
        count either.
        """

    def get_for_client(self, client_id: uuid.UUID, message_id: uuid.UUID) -> Message | None:
        message = self.get(message_id)
        return message if message is not None and message.client_id == client_id else None

    def requeue_failed(self, client_id: uuid.UUID, message_id: uuid.UUID) -> Message | None:
        """Put the client's ``failed`` message back to ``queued`` for a new attempt (issue 17).

        None if it is not the client's or not failed. Its claims start again
        from zero (the reconciler's crash-loop bound counts this attempt
        alone); attempts keep counting, so the attempt is one more on the
        same message. PostgreSQL does it in one conditional UPDATE, so two
        retries at once requeue it once; this default is for the fakes.
        """
        message = self.get_for_client(client_id, message_id)
        if message is None or message.status is not MessageStatus.FAILED:
            return None
        message.status = MessageStatus.QUEUED
        message.last_error = None
        message.next_attempt_at = None
        message.lease_expires_at = None
        message.claims = 0
        self.save_outcome(message)
        return message

    # --- worker claims (issue 7) ---------------------------------------------

    @abc.abstractmethod
    def claim(
        self, message_ids: Sequence[uuid.UUID], token: uuid.UUID, lease_seconds: int
    ) -> list[Message]:
        """Take, in one atomic statement, every listed message nobody holds.

        A message is taken when it is ``queued``, or ``sending`` under a lease
        that has run out (its worker died). Taken rows read ``sending`` with
        ``token`` and a fresh lease; the rest are left alone and not returned.
        """

    @abc.abstractmethod
    def record_outcomes(self, token: uuid.UUID, messages: Sequence[Message]) -> set[uuid.UUID]:
        """Write the outcome of each message still claimed by ``token``; release the claims.

        Returns the ids written: a message whose claim another worker took
        over in the meantime is not overwritten.
        """

    @abc.abstractmethod
    def append_events(self, events: Sequence[tuple[uuid.UUID, EventType, dict[str, Any]]]) -> None:
        """``append_event`` for many at once (one statement)."""

    def claim_for_send(
        self,
        message_ids: Sequence[uuid.UUID],
        token: uuid.UUID,
        lease_seconds: int,
        gate_queues: Sequence[tuple[uuid.UUID, uuid.UUID]] = (),
    ) -> ClaimedBatch:
        """``claim``, the provider order of the claimed messages' clients and their suppressions.

        PostgreSQL answers all three in one statement; this default knows
        neither orders nor suppressions (the worker then reads them itself),
        nor queues (``gate_queues``: the claim gate's view, PostgreSQL only).
        """
        return ClaimedBatch(self.claim(message_ids, token, lease_seconds), {}, None)

    def record_outcomes_with_events(
        self,
        token: uuid.UUID,
        messages: Sequence[Message],
        events: Sequence[tuple[uuid.UUID, EventType, dict[str, Any]]],
    ) -> set[uuid.UUID]:
        """``record_outcomes``, then ``append_events`` for the messages written only."""
        written = self.record_outcomes(token, messages)
        self.append_events([event for event in events if event[0] in written])
        return written

    @abc.abstractmethod
    def unfinished(self, older_than: datetime, limit: int) -> list[Message]:
        """Messages ``queued`` or ``sending`` not changed since ``older_than``, oldest first."""

    @abc.abstractmethod
    def requeue_stale(
        self, message_ids: Sequence[uuid.UUID], older_than: datetime
    ) -> list[uuid.UUID]:
        """Release expired claims of the listed messages, still unchanged since ``older_than``.

        The rows read ``queued`` again (a live claim is left alone) and their
        ``updated_at`` moves on, so the next reconciler pass waits again.
        Returns the ids changed.
        """

    @abc.abstractmethod
    def oldest_unfinished_at(self) -> datetime | None:
        """When the oldest message still ``queued`` or ``sending`` was accepted."""

    @abc.abstractmethod
    def sent_since(self, since: datetime, limit: int) -> list[uuid.UUID]:
        """Messages the worker recorded as sent at or after ``since``."""

    def get_many(self, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Message]:
        found = {message_id: self.get(message_id) for message_id in message_ids}
        return {key: message for key, message in found.items() if message is not None}


@contextlib.contextmanager
def _name_taken_as_error(name: str) -> Iterator[None]:
    """The unique index on lower(name) as ClientNameTaken.

    The index decides, not a lookup first: two admins creating "acme" at the
    same moment both pass any check, and only one insert can win.
    """
    try:
        yield
    except IntegrityError as error:
        if _violated_constraint(error) != CLIENT_NAME_INDEX:
            raise
        raise ClientNameTaken(
            f"a client named {name!r} exists already (names are compared case-insensitively)",
            details=[{"field": "name", "message": "taken by another client"}],
        ) from None


def _violated_constraint(error: IntegrityError) -> str | None:
    # pg8000 carries PostgreSQL's error fields as a dict; "n" is the constraint.
    fields = error.orig.args[0] if error.orig is not None and error.orig.args else None
    return str(fields.get("n")) if isinstance(fields, dict) else None


class SqlClientRepository(ClientRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, client: Client) -> None:
        with _name_taken_as_error(client.name):
            self._session.execute(
                insert(ClientRow).values(
                    id=client.id,
                    name=client.name,
                    api_key_prefix=client.api_key_prefix,
                    quota_limit=client.quota_limit,
                    daily_limit=client.daily_limit,
                    rate_limit=client.rate_limit,
                    status=client.status.value,
                    provider_order=client.provider_order,
                    sandbox_mode=client.sandbox_mode,
                )
            )

    def get(self, client_id: uuid.UUID) -> Client | None:
        row = self._session.execute(select(ClientRow).where(ClientRow.id == client_id)).scalar()
        return _client(row) if row else None

    def get_by_api_key(self, api_key: str) -> Client | None:
        # Any of the client's keys names it, revoked ones included: operators
        # look a client up by whichever key id they were shown.
        row = self._session.execute(
            select(ClientRow)
            .join(ApiKeyRow, ApiKeyRow.client_id == ClientRow.id)
            .where(ApiKeyRow.id == api_key)
        ).scalar()
        return _client(row) if row else None

    def get_for_update(self, client_id: uuid.UUID) -> Client | None:
        row = self._session.execute(
            select(ClientRow).where(ClientRow.id == client_id).with_for_update()
        ).scalar()
        return _client(row) if row else None

    def list(self, status: ClientStatus | None = None) -> list[Client]:
        query = select(ClientRow).order_by(ClientRow.created_at, ClientRow.id)
        if status is not None:
            query = query.where(ClientRow.status == status.value)
        return [_client(row) for row in self._session.execute(query).scalars()]

    def save(self, client: Client) -> None:
        with _name_taken_as_error(client.name):
            self._session.execute(
                update(ClientRow)
                .where(ClientRow.id == client.id)
                .values(
                    name=client.name,
                    rate_limit=client.rate_limit,
                    quota_limit=client.quota_limit,
                    provider_order=client.provider_order,
                    sandbox_mode=client.sandbox_mode,
                    status=client.status.value,
                    daily_limit=client.daily_limit,
                    updated_at=func.now(),
                )
            )

    def touch_last_used(self, client_id: uuid.UUID, at: datetime) -> None:
        # Core UPDATE, not the ORM: a write several instances race on should
        # not read the row first.
        self._session.execute(
            update(ClientRow)
            .where(ClientRow.id == client_id)
            .where((ClientRow.last_used_at.is_(None)) | (ClientRow.last_used_at < at))
            .values(last_used_at=at)
        )


# Rows in the order given, so their ids (and the webhook feed's order) follow it.
_APPEND_EVENTS = text(
    """
    INSERT INTO message_events (message_id, type, detail)
    SELECT message_id, type, detail
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
        AS r(message_id uuid, type text, detail jsonb, n int)
    ORDER BY n
    """
)


class SqlMessageRepository(MessageRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, message: Message) -> None:
        self._session.execute(
            insert(MessageRow).values(
                id=message.id,
                client_id=message.client_id,
                trace_id=message.trace_id,
                template_name=message.template_name,
                template_version=message.template_version,
                template_shared=message.template_shared,
                from_address=message.from_address,
                recipient=message.recipient,
                to_addresses=message.to,
                cc_addresses=message.cc,
                bcc_addresses=message.bcc,
                reply_to=message.reply_to,
                subject=message.subject,
                props=message.props,
                metadata_=message.metadata,
                options=message.options.to_document(),
                status=message.status.value,
                attempts=message.attempts,
                last_error=message.last_error,
                is_test=message.is_test,
                scheduled_at=message.scheduled_at,
                schedule_id=message.schedule_id,
                schedule_run_id=message.schedule_run_id,
            )
        )

    def get(self, message_id: uuid.UUID) -> Message | None:
        row = self._session.execute(select(MessageRow).where(MessageRow.id == message_id)).scalar()
        return _message(row) if row else None

    def requeue_failed(self, client_id: uuid.UUID, message_id: uuid.UUID) -> Message | None:
        row = self._session.execute(
            update(MessageRow)
            .where(
                MessageRow.id == message_id,
                MessageRow.client_id == client_id,
                MessageRow.status == MessageStatus.FAILED.value,
            )
            .values(
                status=MessageStatus.QUEUED.value,
                last_error=None,
                next_attempt_at=None,
                lease_expires_at=None,
                claim_token=None,
                claims=0,
                updated_at=func.now(),
            )
            .returning(MessageRow)
        ).scalar()
        return _message(row) if row else None

    def save_outcome(self, message: Message) -> None:
        self._session.execute(
            update(MessageRow)
            .where(MessageRow.id == message.id)
            .values(
                status=message.status.value,
                subject=message.subject,
                provider=message.provider,
                provider_msg_id=message.provider_msg_id,
                attempts=message.attempts,
                last_error=message.last_error,
                sent_at=message.sent_at,
                updated_at=func.now(),
            )
        )

    def append_event(
        self, message_id: uuid.UUID, event_type: EventType, detail: dict[str, Any]
    ) -> None:
        self._session.execute(
            insert(MessageEventRow).values(
                message_id=message_id, type=event_type.value, detail=detail
            )
        )

    def events(self, message_id: uuid.UUID) -> list[MessageEvent]:
        rows = self._session.execute(
            select(MessageEventRow)
            .where(MessageEventRow.message_id == message_id)
            .order_by(MessageEventRow.id)
        ).scalars()
        events = [
            MessageEvent(type=EventType(row.type), at=row.at, detail=row.detail) for row in rows
        ]
        if not any(event.type is EventType.ACCEPTED for event in events):
            events[:0] = self._batch_acceptance(message_id)
        return events

    def _batch_acceptance(self, message_id: uuid.UUID) -> list[MessageEvent]:
        """A bulk batch message's ``accepted`` entry, read from its row (issue 17).

        The planner writes no accepted event per message (a million of them
        were half of its time); the history reads as a single send's: accepted
        when the row was written, with the trace and batch ids the event held.
        """
        row = self._session.execute(
            select(MessageRow.created_at, MessageRow.trace_id, MessageRow.batch_id).where(
                MessageRow.id == message_id, MessageRow.batch_id.is_not(None)
            )
        ).first()
        if row is None:
            return []
        created_at, trace_id, batch_id = row
        detail = {"trace_id": trace_id, "batch_id": str(batch_id)}
        return [MessageEvent(type=EventType.ACCEPTED, at=created_at, detail=detail)]

    def claim(
        self, message_ids: Sequence[uuid.UUID], token: uuid.UUID, lease_seconds: int
    ) -> list[Message]:
        if not message_ids:
            return []
        now = func.now()
        takeable = (
            (MessageRow.status == MessageStatus.QUEUED.value)
            | (
                (MessageRow.status == MessageStatus.SENDING.value)
                & (MessageRow.lease_expires_at < now)
            )
            | (
                (MessageRow.status == MessageStatus.SCHEDULED.value)
                & MessageRow.enqueued_at.is_not(None)
                & (
                    MessageRow.scheduled_at
                    <= now + timedelta(seconds=batch_statements.SCHEDULED_EARLY_SECONDS)
                )
            )
        )
        # A cancelled batch's message is never taken (issue 17).
        takeable = takeable & (
            MessageRow.batch_id.is_(None)
            | ~select(BatchRow.id)
            .where(BatchRow.id == MessageRow.batch_id, BatchRow.status == "cancelled")
            .exists()
        )
        # One conditional UPDATE: PostgreSQL re-checks the WHERE on the newest
        # row version after waiting for a concurrent claimer's lock, so two
        # workers can never both see the row as takeable.
        rows = self._session.execute(
            update(MessageRow)
            .where(MessageRow.id.in_(list(message_ids)))
            .where(takeable)
            .values(
                status=MessageStatus.SENDING.value,
                claim_token=token,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                claims=MessageRow.claims + 1,
                updated_at=now,
            )
            .returning(MessageRow)
        ).scalars()
        return [_message(row) for row in rows]

    def record_outcomes(self, token: uuid.UUID, messages: Sequence[Message]) -> set[uuid.UUID]:
        return batch_statements.record_outcomes(self._session, token, messages, [])

    def record_outcomes_with_events(
        self,
        token: uuid.UUID,
        messages: Sequence[Message],
        events: Sequence[tuple[uuid.UUID, EventType, dict[str, Any]]],
    ) -> set[uuid.UUID]:
        # One fixed statement (issue 8): the UPDATE and the events' INSERT.
        return batch_statements.record_outcomes(self._session, token, messages, events)

    def claim_for_send(
        self,
        message_ids: Sequence[uuid.UUID],
        token: uuid.UUID,
        lease_seconds: int,
        gate_queues: Sequence[tuple[uuid.UUID, uuid.UUID]] = (),
    ) -> ClaimedBatch:
        return batch_statements.claim_for_send(
            self._session, message_ids, token, lease_seconds, gate_queues
        )

    def append_events(self, events: Sequence[tuple[uuid.UUID, EventType, dict[str, Any]]]) -> None:
        if not events:
            return
        # One JSON document, whatever the number of events (issue 21): the
        # ORM's multi-row VALUES bound three parameters per event, each
        # detail serialised and escaped on its own.
        rows = [
            {"message_id": str(message_id), "type": event_type.value, "detail": detail, "n": n}
            for n, (message_id, event_type, detail) in enumerate(events)
        ]
        self._session.execute(_APPEND_EVENTS, {"rows": json.dumps(rows, default=str)})

    def get_many(self, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Message]:
        if not message_ids:
            return {}
        rows = self._session.execute(
            select(MessageRow).where(MessageRow.id.in_(list(message_ids)))
        ).scalars()
        return {row.id: _message(row) for row in rows}

    def oldest_unfinished_at(self) -> datetime | None:
        oldest: datetime | None = self._session.execute(
            select(func.min(MessageRow.created_at)).where(MessageRow.status.in_(UNFINISHED))
        ).scalar()
        return oldest

    def sent_since(self, since: datetime, limit: int) -> list[uuid.UUID]:
        rows = self._session.execute(
            select(MessageRow.id)
            .where(MessageRow.sent_at >= since)
            .order_by(MessageRow.sent_at)
            .limit(limit)
        ).scalars()
        return list(rows)

    def unfinished(self, older_than: datetime, limit: int) -> list[Message]:
        rows = self._session.execute(
            select(MessageRow)
            .where(MessageRow.status.in_(UNFINISHED))
            .where(MessageRow.updated_at < older_than)
            .order_by(MessageRow.updated_at)
            .limit(limit)
        ).scalars()
        return [_message(row) for row in rows]

    def requeue_stale(
        self, message_ids: Sequence[uuid.UUID], older_than: datetime
    ) -> list[uuid.UUID]:
        if not message_ids:
            return []
        now = func.now()
        rows = self._session.execute(
            update(MessageRow)
            .where(MessageRow.id.in_(list(message_ids)))
            .where(MessageRow.updated_at < older_than)
            .where(
                (MessageRow.status == MessageStatus.QUEUED.value)
                | (
                    (MessageRow.status == MessageStatus.SENDING.value)
                    & (MessageRow.lease_expires_at < now)
                )
            )
            .values(
                status=MessageStatus.QUEUED.value,
                claim_token=None,
                lease_expires_at=None,
                updated_at=now,
            )
            .returning(MessageRow.id)
        ).scalars()
        return list(rows)

    def count_accepted(self, client_id: uuid.UUID, start: datetime, end: datetime) -> int:
        def has_event(event_type: EventType) -> Exists:
            return (
                select(MessageEventRow.id)
                .where(MessageEventRow.message_id == MessageRow.id)
                .where(MessageEventRow.type == event_type.value)
                .exists()
            )

        count = self._session.execute(
            select(func.count())
            .select_from(MessageRow)
            .where(MessageRow.client_id == client_id)
            .where(MessageRow.created_at >= start)
            .where(MessageRow.created_at < end)
            # Test traffic is never charged (issue 15).
            .where(MessageRow.is_test.is_(False))
            # A bulk batch's message has no accepted event: its row is its
            # acceptance (the planner writes only what it accepted, issue 17).
            .where(MessageRow.batch_id.is_not(None) | has_event(EventType.ACCEPTED))
            .where(~has_event(EventType.ENQUEUE_FAILED))
        ).scalar_one()
        return int(count)


def _client(row: ClientRow) -> Client:
    return Client(
        id=row.id,
        name=row.name,
        api_key_prefix=row.api_key_prefix,
        rate_limit=row.rate_limit,
        quota_limit=row.quota_limit,
        status=ClientStatus(row.status),
        provider_order=list(row.provider_order) if row.provider_order is not None else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_used_at=row.last_used_at,
        sandbox_mode=row.sandbox_mode,
        daily_limit=row.daily_limit,
        sending_paused_at=row.sending_paused_at,
        sending_paused_reason=row.sending_paused_reason,
    )


def _message(row: MessageRow) -> Message:
    return Message(
        id=row.id,
        client_id=row.client_id,
        trace_id=row.trace_id,
        template_name=row.template_name,
        template_version=row.template_version,
        template_shared=row.template_shared,
        from_address=row.from_address,
        to=list(row.to_addresses),
        cc=list(row.cc_addresses),
        bcc=list(row.bcc_addresses),
        reply_to=list(row.reply_to),
        subject=row.subject,
        props=dict(row.props),
        metadata=dict(row.metadata_),
        status=MessageStatus(row.status),
        provider=row.provider,
        provider_msg_id=row.provider_msg_id,
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sent_at=row.sent_at,
        next_attempt_at=row.next_attempt_at,
        lease_expires_at=row.lease_expires_at,
        claims=row.claims,
        is_test=row.is_test,
        options=SendOptions.from_document(row.options),
        scheduled_at=row.scheduled_at,
        schedule_id=row.schedule_id,
        schedule_run_id=row.schedule_run_id,
    )
