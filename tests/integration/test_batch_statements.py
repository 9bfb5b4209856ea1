"""The worker's fixed per-batch statements (issue 8) on real PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.domain.model import EventType, MessageStatus
from tests.integration.conftest import SmtpSink
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
        taken, orders = uow.messages.claim_for_send([message_id], uuid.uuid4(), 60)
        uow.commit()
    with SqlUnitOfWork(database) as uow:
        again, _ = uow.messages.claim_for_send([message_id], uuid.uuid4(), 60)
        uow.commit()
        stored = uow.messages.get(message_id)
    # THEN the first got the message, with what sending needs and its client's order
    (message,) = taken
    assert (message.id, message.status, message.claims) == (message_id, MessageStatus.SENDING, 1)
    assert message.to
    assert message.created_at is not None
    assert orders == {message.client_id: ["smtp", "ses"]}
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
        (message,) = uow.messages.claim_for_send([message_id], token, 60)[0]
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
