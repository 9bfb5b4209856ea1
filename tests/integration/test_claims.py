"""Worker claims on real PostgreSQL: one sender per message, and takeover after a dead worker."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.bootstrap import bootstrap
from mailroom.domain.model import EventType, MessageStatus
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services.delivery import DeliveryResult, deliver_message
from tests.events import FakeLambdaContext
from tests.integration.conftest import SmtpSink, sqs_event
from tests.integration.test_pipeline import Stack, database_url_of

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(database_url_of(database), redis_url, queue_url, smtp_sink.port)


def _received_event(stack: Stack) -> dict[str, Any]:
    received = stack.sqs.receive_message(
        QueueUrl=stack.queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    )["Messages"]
    arn = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])
    return sqs_event(received, arn["Attributes"]["QueueArn"])


def test_two_workers_given_the_same_record_at_once_send_it_once(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    # GIVEN an accepted message and two workers (each its own connections and
    # SMTP session) that both received its SQS record, as at-least-once allows
    _, accepted = stack.send()
    event = _received_event(stack)
    workers = [stack.services, bootstrap(stack.settings)]
    start = threading.Barrier(len(workers))

    def run(index: int) -> dict[str, Any]:
        start.wait()
        return process_send_batch(event, FakeLambdaContext("mailroom-worker"), workers[index])

    # WHEN both process the batch at the same moment
    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        answers = list(pool.map(run, range(len(workers))))
    # THEN both acknowledge the record, but the SMTP server got one email
    assert answers == [{"batchItemFailures": []}] * 2
    assert len(smtp_sink.received) == 1
    # ...and the row reads sent once, claimed once, with one sent event
    view = stack.status(accepted["id"])
    assert (view["status"], view["attempts"]) == ("sent", 1)
    assert [e["type"] for e in view["events"]] == ["accepted", "sent"]


def test_concurrent_claims_on_the_same_messages_never_overlap(stack: Stack) -> None:
    # GIVEN twenty queued messages
    ids = [uuid.UUID(stack.send()[1]["id"]) for _ in range(20)]
    database = Database(stack.settings.database_url, pool_size=8)
    start = threading.Barrier(8)

    def claim(_: int) -> list[uuid.UUID]:
        with SqlUnitOfWork(database) as uow:
            start.wait()
            taken = uow.messages.claim(ids, uuid.uuid4(), lease_seconds=60)
            uow.commit()
        return [message.id for message in taken]

    # WHEN eight workers claim all of them in the same instant
    with ThreadPoolExecutor(max_workers=8) as pool:
        claims = list(pool.map(claim, range(8)))
    database.dispose()
    # THEN every message was taken by exactly one of them
    taken = [message_id for claimed in claims for message_id in claimed]
    assert sorted(taken) == sorted(ids)


def test_an_expired_lease_is_taken_over_and_the_dead_worker_cannot_write(
    stack: Stack, smtp_sink: SmtpSink, database: Database
) -> None:
    # GIVEN a message claimed by a worker that then died (its lease has run out)
    _, accepted = stack.send()
    message_id = uuid.UUID(accepted["id"])
    dead_token = uuid.uuid4()
    with SqlUnitOfWork(database) as uow:
        (claimed,) = uow.messages.claim([message_id], dead_token, lease_seconds=60)
        uow.commit()
    assert claimed.status is MessageStatus.SENDING
    # WHILE the lease is live, a redelivery is acknowledged without sending
    live = _deliver(stack, message_id)
    assert live.result is DeliveryResult.IN_PROGRESS
    assert smtp_sink.received == []
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE messages SET lease_expires_at = now() - interval '1 second' WHERE id = :id"
            ),
            {"id": message_id},
        )
    # WHEN the queue delivers the record again
    outcome = _deliver(stack, message_id)
    # THEN the new worker takes the claim over and sends
    assert outcome.result is DeliveryResult.SENT
    assert len(smtp_sink.received) == 1
    with SqlUnitOfWork(database) as uow:
        stored = uow.messages.get(message_id)
        # ...and the dead worker's token no longer writes anything
        claimed.status = MessageStatus.FAILED
        assert uow.messages.record_outcomes(dead_token, [claimed]) == set()
        types = [event.type for event in uow.messages.events(message_id)]
    assert stored is not None
    assert (stored.status, stored.claims, stored.lease_expires_at) == (
        MessageStatus.SENT,
        2,
        None,
    )
    assert types == [EventType.ACCEPTED, EventType.SENT]


def _deliver(stack: Stack, message_id: uuid.UUID) -> Any:
    services = stack.services
    return deliver_message(
        services.uow(),
        services.templates,
        services.renderer,
        services.providers,
        message_id=message_id,
        max_attempts=2,
    )
