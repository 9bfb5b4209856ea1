"""Repositories and schema on a real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from mailroom.adapters.db import pg8000_statements
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.domain.model import Client, EventType, Message, MessageStatus

pytestmark = pytest.mark.integration


def _client() -> Client:
    return Client(
        id=uuid.uuid4(),
        name=f"acme-{uuid.uuid4().hex[:8]}",  # names are unique; tests add several
        api_key_prefix=f"mr_live_{uuid.uuid4().hex[:24]}",
        rate_limit=600,
        quota_limit=1000,
    )


def _message(client: Client) -> Message:
    return Message(
        id=uuid.uuid4(),
        client_id=client.id,
        trace_id="trace-1",
        template_name="welcome",
        from_address="Acme <noreply@acme.example.com>",
        to=["Ada <ada@example.com>", "bob@example.com"],
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
        props={"first_name": "Ada", "steps": ["a", "b"]},
        metadata={"order": 42},
    )


def test_message_round_trips_with_its_events(database: Database) -> None:
    # GIVEN a client and a message written in one unit of work
    client, message = _client(), None
    with SqlUnitOfWork(database) as uow:
        uow.clients.add(client)
        message = _message(client)
        uow.messages.add(message)
        uow.messages.append_event(message.id, EventType.ACCEPTED, {"trace_id": "trace-1"})
        uow.commit()
    # WHEN the outcome of a send is saved
    message.status = MessageStatus.SENT
    message.provider, message.provider_msg_id = "smtp", "abc@acme.example.com"
    message.attempts, message.subject = 1, "Welcome"
    message.sent_at = datetime.now(UTC)
    with SqlUnitOfWork(database) as uow:
        uow.messages.save_outcome(message)
        uow.messages.append_event(message.id, EventType.SENT, {"provider": "smtp"})
        uow.commit()
    # THEN everything reads back, with the seed's recipient column filled
    with SqlUnitOfWork(database) as uow:
        stored = uow.messages.get(message.id)
        events = uow.messages.events(message.id)
    assert stored is not None
    assert stored.status is MessageStatus.SENT
    assert (stored.provider, stored.provider_msg_id, stored.attempts) == (
        "smtp",
        "abc@acme.example.com",
        1,
    )
    assert stored.to == message.to
    assert stored.bcc == ["bcc@example.com"]
    assert stored.props == message.props
    assert stored.metadata == {"order": 42}
    assert stored.created_at is not None
    assert stored.sent_at is not None
    assert [e.type for e in events] == [EventType.ACCEPTED, EventType.SENT]
    with database.engine.connect() as connection:
        recipient = connection.execute(
            text("SELECT recipient FROM messages WHERE id = :id"), {"id": message.id}
        ).scalar()
    assert recipient == "Ada <ada@example.com>, bob@example.com"


def test_uncommitted_work_is_rolled_back(database: Database) -> None:
    client = _client()
    with SqlUnitOfWork(database) as uow:
        uow.clients.add(client)  # no commit
    with SqlUnitOfWork(database) as uow:
        assert uow.clients.get(client.id) is None


def test_message_events_are_append_only(database: Database) -> None:
    client = _client()
    with SqlUnitOfWork(database) as uow:
        uow.clients.add(client)
        message = _message(client)
        uow.messages.add(message)
        uow.messages.append_event(message.id, EventType.ACCEPTED, {})
        uow.commit()
    for statement in ("UPDATE message_events SET type = 'sent'", "DELETE FROM message_events"):
        with pytest.raises(DBAPIError, match="append-only"), database.engine.begin() as conn:
            conn.execute(text(statement))


def test_status_outside_the_enum_is_refused(database: Database) -> None:
    client = _client()
    with SqlUnitOfWork(database) as uow:
        uow.clients.add(client)
        uow.commit()
    # pg8000 reports check violations as ProgrammingError, hence the name match.
    with pytest.raises(DBAPIError, match="ck_clients_status"), database.engine.begin() as conn:
        conn.execute(text("UPDATE clients SET status = 'deleted'"))


def test_api_keys_are_unique(database: Database) -> None:
    first = _client()
    second = _client()
    second.api_key_prefix = first.api_key_prefix
    with SqlUnitOfWork(database) as uow:
        uow.clients.add(first)
        uow.commit()
    with SqlUnitOfWork(database) as uow, pytest.raises(IntegrityError):
        uow.clients.add(second)


def test_a_pooled_connection_killed_by_the_server_is_replaced_at_checkout(
    database_url: str,
) -> None:
    # GIVEN a pool of one connection that has served a transaction
    database, killer = Database(database_url, pool_size=1, max_overflow=0), Database(database_url)
    try:
        with database.engine.connect() as connection:
            first_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # WHEN the server ends that connection (a restart, an idle timeout)
        with killer.engine.begin() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
        # THEN the next unit of work gets a new connection instead of an error
        with SqlUnitOfWork(database) as uow:
            uow.clients.add(_client())
            uow.commit()
        with database.engine.connect() as connection:
            second_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second_pid != first_pid
    finally:
        database.dispose()
        killer.dispose()


def test_a_checkout_opens_the_transaction_before_any_statement(
    database: Database, database_url: str
) -> None:
    # The pool tests a connection with the BEGIN its transaction needs anyway
    # (no separate ping): the server sees it in a transaction at checkout.
    watcher = Database(database_url)
    try:
        with database.engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            connection.commit()
        with database.engine.connect() as connection, watcher.engine.connect() as watching:
            connection.connection  # noqa: B018 - checks a connection out, runs nothing
            state = watching.execute(
                text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar_one()
        assert state == "idle in transaction"
    finally:
        watcher.dispose()


def test_timestamptz_values_read_back_as_aware_datetimes_in_any_session_zone(
    database: Database,
) -> None:
    # The connections read timestamptz with fromisoformat (issue 8), which
    # must give the instant pg8000's own reader gives, whatever the offset
    # the server prints it in, and fall back to it for infinity.
    with database.engine.connect() as connection:
        readers = connection.connection.dbapi_connection.pg_types  # type: ignore[union-attr]
        assert readers[1184] is pg8000_statements.timestamptz_in
        connection.execute(text("SET LOCAL TIME ZONE 'Asia/Kolkata'"))
        noon, infinite = connection.execute(
            text("SELECT timestamptz '2026-11-23 12:00:00.25+00', timestamptz 'infinity'")
        ).one()
    assert noon == datetime(2026, 11, 23, 12, 0, 0, 250000, tzinfo=UTC)
    assert noon.utcoffset() is not None
    assert noon.utcoffset().total_seconds() == 5.5 * 3600
    assert infinite == "infinity"


def test_commit_and_rollback_go_as_simple_queries_and_a_failed_commit_raises(
    database: Database,
) -> None:
    # The engine ends transactions with simple-protocol COMMIT/ROLLBACK
    # (issue 8); a COMMIT that fails must still surface as SQLAlchemy's error
    # carrying the server's SQLSTATE (as pg8000's own commit did), and leave
    # the connection usable.
    assert database.engine.dialect.do_commit is pg8000_statements.commit
    with database.engine.connect() as connection:
        connection.execute(
            text(
                "CREATE TEMP TABLE deferred_check (id int,"
                " CONSTRAINT deferred_unique UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
        connection.commit()
        connection.execute(text("INSERT INTO deferred_check VALUES (1), (1)"))
        with pytest.raises(DBAPIError) as failed:
            connection.commit()
        assert failed.value.orig.args[0]["C"] == "23505"  # type: ignore[union-attr]
        connection.rollback()
        connection.execute(text("INSERT INTO deferred_check VALUES (2)"))
        connection.rollback()
        connection.execute(text("INSERT INTO deferred_check VALUES (3)"))
        connection.commit()
        assert connection.execute(text("SELECT id FROM deferred_check")).scalars().all() == [3]
