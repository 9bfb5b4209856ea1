"""The worker's fixed per-batch statements (issue 8) on real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.domain.feedback import Suppression, SuppressionReason
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.services import suppression
from tests.integration.conftest import SmtpSink, stored_client
from tests.integration.test_pipeline import Stack, database_url_of

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(database_url_of(database), redis_url, queue_url, smtp_sink.port)


def test_claim_for_send_brings_back_the_client_order_and_takes_each_message_once(
    stack: Stack, database: Database
) -> None:
    # GIVEN a queued message whose client has a provider order
    message_id = uuid.UUID(stack.send()[1]["id"])
    with database.engine.begin() as connection:
        connection.execute(
            text(
                'UPDATE clients SET provider_order = \'["smtp", "ses"]\'::jsonb'
                " WHERE id = (SELECT client_id FROM messages WHERE id = :id)"
            ),
            {"id": message_id},
        )
    # WHEN one worker claims it, then another while the lease is live
    with SqlUnitOfWork(database) as uow:
        claim = uow.messages.claim_for_send([message_id], uuid.uuid4(), 60)
        uow.commit()
    with SqlUnitOfWork(database) as uow:
        again = uow.messages.claim_for_send([message_id], uuid.uuid4(), 60).messages
        uow.commit()
        stored = uow.messages.get(message_id)
    # THEN the first got the message, with what sending needs and its client's order
    (message,) = claim.messages
    assert (message.id, message.status, message.claims) == (message_id, MessageStatus.SENDING, 1)
    assert message.to
    assert message.created_at is not None
    assert claim.orders == {message.client_id: ["smtp", "ses"]}
    assert claim.suppressions == []
    # ...and the second got nothing; the row holds the first claim's lease
    assert again == []
    assert stored is not None
    assert stored.lease_expires_at is not None


def test_outcomes_and_events_are_written_only_under_the_live_claim(
    stack: Stack, database: Database
) -> None:
    # GIVEN a message claimed by a worker
    message_id = uuid.UUID(stack.send()[1]["id"])
    token = uuid.uuid4()
    with SqlUnitOfWork(database) as uow:
        (message,) = uow.messages.claim_for_send([message_id], token, 60).messages
        uow.commit()
    message.status = MessageStatus.SENT
    message.provider, message.provider_msg_id, message.attempts = "smtp", "<abc@x>", 1
    events: list[tuple[uuid.UUID, EventType, dict[str, Any]]] = [
        (message_id, EventType.PROVIDER_FAILED, {"provider": "ses", "n": 1}),
        (message_id, EventType.SENT, {"provider": "smtp"}),
    ]
    # WHEN a stranger's token writes first, then the claim's own
    with SqlUnitOfWork(database) as uow:
        stranger = uow.messages.record_outcomes_with_events(uuid.uuid4(), [message], events)
        uow.commit()
    with SqlUnitOfWork(database) as uow:
        written = uow.messages.record_outcomes_with_events(token, [message], events)
        uow.commit()
        stored = uow.messages.get(message_id)
        recorded = uow.messages.events(message_id)
    # THEN only the claim's write landed: the outcome, the claim released...
    assert (stranger, written) == (set(), {message_id})
    assert stored is not None
    assert (stored.status, stored.provider, stored.provider_msg_id, stored.attempts) == (
        MessageStatus.SENT,
        "smtp",
        "<abc@x>",
        1,
    )
    assert stored.lease_expires_at is None
    # ...and its events once each, in the order given
    assert [(event.type, event.detail) for event in recorded[1:]] == [
        (EventType.PROVIDER_FAILED, {"provider": "ses", "n": 1}),
        (EventType.SENT, {"provider": "smtp"}),
    ]


def test_the_claim_brings_back_the_suppressions_of_its_recipients(database: Database) -> None:
    # GIVEN two clients' accepted messages (with their recipient rows), and
    # suppressions: global, A's own, B's own, an expired one, an unrelated one
    a, b = stored_client(database).id, stored_client(database).id
    now = datetime.now(UTC)
    entries = [
        ("ada@example.com", None, None),
        ("bob@example.com", a, now + timedelta(days=1)),
        ("cy@example.com", b, None),
        ("old@example.com", None, now - timedelta(days=1)),
        ("nobody@example.com", None, None),
    ]
    with SqlUnitOfWork(database) as uow:
        for address, client, expires in entries:
            uow.suppressions.upsert(
                Suppression(address, SuppressionReason.MANUAL, client_id=client, expires_at=expires)
            )
        uow.commit()
    first = _accepted(database, a, ["Ada <Ada@Example.com>", "bob@example.com"], ["cy@example.com"])
    second = _accepted(database, b, ["old@example.com", "dee@example.com"], [])
    # WHEN both are claimed in one statement
    with SqlUnitOfWork(database) as uow:
        claim = uow.messages.claim_for_send([first.id, second.id], uuid.uuid4(), 60)
        uow.commit()
    # THEN the entries that apply come back once each: the global one, A's
    # own (with its expiry); not B's entry for A's cc, the expired or the unrelated
    assert claim.suppressions is not None
    found = {(entry.address, entry.client_id) for entry in claim.suppressions}
    assert found == {("ada@example.com", None), ("bob@example.com", a)}
    (bob,) = [entry for entry in claim.suppressions if entry.address == "bob@example.com"]
    assert bob.expires_at is not None
    assert abs((bob.expires_at - (now + timedelta(days=1))).total_seconds()) < 1
    assert bob.reason is SuppressionReason.MANUAL
    assert bob.id is not None


def test_a_message_without_recipient_rows_leaves_the_suppressions_unknown(
    database: Database,
) -> None:
    # GIVEN a queued message written without its recipient rows
    client_id = stored_client(database).id
    message = _message(client_id, ["ada@example.com"], [])
    with SqlUnitOfWork(database) as uow:
        uow.messages.add(message)
        uow.commit()
    # WHEN it is claimed
    with SqlUnitOfWork(database) as uow:
        claim = uow.messages.claim_for_send([message.id], uuid.uuid4(), 60)
        uow.commit()
    # THEN it is taken, and the caller is told to screen it itself
    assert [taken.id for taken in claim.messages] == [message.id]
    assert claim.suppressions is None


def _message(client_id: uuid.UUID, to: list[str], cc: list[str]) -> Message:
    return Message(
        id=uuid.uuid4(),
        client_id=client_id,
        trace_id="t",
        template_name="welcome",
        from_address="noreply@example.com",
        to=to,
        cc=cc,
    )


def _accepted(database: Database, client_id: uuid.UUID, to: list[str], cc: list[str]) -> Message:
    message = _message(client_id, to, cc)
    with SqlUnitOfWork(database) as uow:
        uow.add_accepted(message, {}, suppression.recipient_rows(message))
        uow.commit()
    return message


def _scans(plan: Any) -> tuple[set[str], set[str]]:
    """The tables read whole, and the indexes used, in an EXPLAIN (FORMAT JSON) plan."""
    whole, indexes = set(), set()
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        if node["Node Type"] == "Seq Scan":
            whole.add(node["Relation Name"])
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        stack.extend(node.get("Plans", []))
    return whole, indexes


def test_the_batch_statements_find_their_rows_by_key_even_on_stale_statistics(
    database: Database,
) -> None:
    # GIVEN statistics taken while the tables held one message, then a burst
    # of 3,000 queued messages with their recipient rows (autovacuum has not
    # caught up: the planner believes a handful of messages are unfinished)
    seed = _accepted(database, stored_client(database).id, ["ada@example.com"], [])
    with database.engine.begin() as connection:
        connection.execute(text("ANALYZE messages"))
        connection.execute(text("ANALYZE message_recipients"))
        connection.execute(
            text(
                "CREATE TEMP TABLE burst ON COMMIT DROP AS"
                " SELECT gen_random_uuid() AS id FROM generate_series(1, 3000)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO messages SELECT (jsonb_populate_record(m,"
                " jsonb_build_object('id', b.id))).* FROM messages m, burst b WHERE m.id = :seed"
            ),
            {"seed": seed.id},
        )
        connection.execute(
            text(
                "INSERT INTO message_recipients SELECT (jsonb_populate_record(r,"
                " jsonb_build_object('message_id', b.id))).*"
                " FROM message_recipients r, burst b WHERE r.message_id = :seed"
            ),
            {"seed": seed.id},
        )
        ids = [str(row[0]) for row in connection.execute(text("SELECT id FROM messages LIMIT 10"))]
    # WHEN the planner plans a claim and an outcome write for ten of them
    from mailroom.adapters.db import batch_statements

    parameters = {
        "ids": ids,
        "token": str(uuid.uuid4()),
        "lease_seconds": 60,
        "early_seconds": batch_statements.SCHEDULED_EARLY_SECONDS,
        # Issue 20: the claim gate's (message, queue) pairs, one queue for all.
        "gate_ids": "{" + ",".join(ids) + "}",
        "gate_queues": "{" + ",".join([str(uuid.uuid4())] * len(ids)) + "}",
    }
    with database.engine.connect() as connection:
        claim = connection.execute(
            text(f"EXPLAIN (FORMAT JSON) {batch_statements._CLAIM.text}"), parameters
        ).scalar_one()
        record = connection.execute(
            text(f"EXPLAIN (FORMAT JSON) {batch_statements._RECORD.text}"),
            {**parameters, "outcomes": "[]", "events": "[]"},
        ).scalar_one()
    # THEN messages are reached through their primary key only, and the
    # recipients through the message's own rows: nothing scans the backlog
    for plan in (claim, record):
        whole, indexes = _scans(plan)
        assert not whole & {"messages", "message_recipients"}, whole
        assert "pk_messages" in indexes
        allowed = {
            "pk_messages",
            "pk_message_recipients",
            "pk_clients",
            "ix_suppressions_address",
            "pk_queues",  # the paused-queue check: one probe per queue of the batch
        }
        assert indexes <= allowed, indexes
