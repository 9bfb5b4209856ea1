"""The send API's one-statement insert on PostgreSQL: row, accepted event, recipient rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mailroom.adapters.db.tables import MessageEventRow, MessageRecipientRow
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.domain.feedback import Suppression, SuppressionReason
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.services import suppression
from tests.integration.conftest import stored_client

pytestmark = pytest.mark.integration


def test_one_statement_writes_the_row_its_event_and_its_recipients(database: Database) -> None:
    # GIVEN a client and a message with To, Cc and Bcc, props and metadata
    uow = SqlUnitOfWork(database)
    client = stored_client(database)
    message = Message(
        id=uuid.uuid4(),
        client_id=client.id,
        trace_id="trace-1",
        template_name="welcome",
        from_address="Acme <noreply@acme.example.com>",
        to=["Ada <ada@example.com>", "bob@example.com"],
        cc=["carol@example.com"],
        bcc=[],
        props={"name": "Ada", "items": [1, 2]},
        metadata={"order": "42"},
    )
    rows = [("ada@example.com", "to"), ("bob@example.com", "to"), ("carol@example.com", "cc")]
    # WHEN add_accepted writes it and the transaction commits
    with uow:
        uow.add_accepted(message, {"trace_id": "trace-1"}, rows)
        uow.commit()
    # THEN the row reads back as written, with one accepted event and three recipients
    with uow:
        stored = uow.messages.get(message.id)
        events = uow.messages.events(message.id)
    assert stored is not None
    assert stored.status is MessageStatus.QUEUED
    assert (stored.to, stored.cc, stored.bcc) == (message.to, message.cc, [])
    assert stored.props == {"name": "Ada", "items": [1, 2]}
    assert stored.metadata == {"order": "42"}
    assert stored.from_address == "Acme <noreply@acme.example.com>"
    assert [(e.type, e.detail) for e in events] == [(EventType.ACCEPTED, {"trace_id": "trace-1"})]
    with database.engine.connect() as connection:
        recipients = connection.execute(
            select(MessageRecipientRow.address, MessageRecipientRow.kind)
            .where(MessageRecipientRow.message_id == message.id)
            .order_by(MessageRecipientRow.address)
        ).all()
        event_count = len(
            connection.execute(
                select(MessageEventRow.id).where(MessageEventRow.message_id == message.id)
            ).all()
        )
    assert [tuple(r) for r in recipients] == rows
    assert event_count == 1


def test_no_recipient_rows_and_a_failed_statement_leaves_nothing(database: Database) -> None:
    # GIVEN a message whose client does not exist (the foreign key will refuse it)
    uow = SqlUnitOfWork(database)
    orphan = Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name="welcome",
        from_address="noreply@acme.example.com",
        to=["ada@example.com"],
    )
    # WHEN it is inserted with an empty recipient list
    with pytest.raises(Exception, match="foreign key"), uow:
        uow.add_accepted(orphan, {}, [])
    # THEN nothing of it was written
    with uow:
        assert uow.messages.get(orphan.id) is None


def test_the_insert_checks_suppressions_and_writes_nothing_when_one_applies(
    database: Database,
) -> None:
    # GIVEN two clients, and suppressions: a global one, one of B's, an expired one
    a, b = stored_client(database), stored_client(database)
    now = datetime.now(UTC)
    with SqlUnitOfWork(database) as uow:
        for address, client_id, expires in (
            ("carol@example.com", None, None),
            ("bob@example.com", b.id, None),
            ("old@example.com", None, now - timedelta(days=1)),
        ):
            uow.suppressions.upsert(
                Suppression(address, SuppressionReason.MANUAL, client_id, expires_at=expires)
            )
        uow.commit()
    # WHEN A sends to addresses only B's and the expired entry name, then with a
    # globally suppressed cc
    clear, blocked = _message(a.id, cc=[]), _message(a.id, cc=["Carol <Carol@example.com>"])
    with SqlUnitOfWork(database) as uow:
        clear_answer = uow.add_accepted_unless_suppressed(clear, {}, _rows(clear))
        blocked_answer = uow.add_accepted_unless_suppressed(blocked, {}, _rows(blocked))
        uow.commit()
    # THEN the first is written in full and the second not at all, with the entry that applies
    assert clear_answer == []
    assert [(s.address, s.client_id, s.reason) for s in blocked_answer] == [
        ("carol@example.com", None, SuppressionReason.MANUAL)
    ]
    with SqlUnitOfWork(database) as uow:
        assert uow.messages.get(clear.id) is not None
        assert uow.messages.get(blocked.id) is None
        assert len(uow.messages.events(clear.id)) == 1
        assert uow.messages.events(blocked.id) == []


def _message(client_id: uuid.UUID, *, cc: list[str]) -> Message:
    return Message(
        id=uuid.uuid4(),
        client_id=client_id,
        trace_id="t",
        template_name="welcome",
        from_address="noreply@example.com",
        to=["bob@example.com", "old@example.com"],
        cc=cc,
    )


def _rows(message: Message) -> list[tuple[str, str]]:
    return suppression.recipient_rows(message)
