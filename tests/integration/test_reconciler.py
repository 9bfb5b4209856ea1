"""The reconciler on real PostgreSQL and SQS (moto): stuck mail moves, exhausted mail ends."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.domain.model import EventType, MessageStatus
from mailroom.entrypoints.reconciler import run_reconciler
from mailroom.services.reconciler import ReconcilePolicy, reconcile
from tests.events import FakeLambdaContext
from tests.integration.conftest import SmtpSink
from tests.integration.test_pipeline import Stack, database_url_of

pytestmark = pytest.mark.integration

POLICY = ReconcilePolicy(
    stale_after=timedelta(seconds=60), max_attempts=2, max_claims=4, batch_size=100
)


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(database_url_of(database), redis_url, queue_url, smtp_sink.port)


def _drain(stack: Stack) -> list[dict[str, Any]]:
    """Every message on the queue now, deleted."""
    bodies: list[dict[str, Any]] = []
    while True:
        received = stack.sqs.receive_message(
            QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not received:
            return bodies
        for message in received:
            bodies.append(json.loads(message["Body"]))
            stack.sqs.delete_message(
                QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )


def uow_events(database: Database, message_id: str) -> list[Any]:
    with SqlUnitOfWork(database) as uow:
        return list(uow.messages.events(uuid.UUID(message_id)))


def _age(database: Database, message_id: str, seconds: int, **columns: Any) -> None:
    """Move the row's clock back, as if it had been sitting there that long."""
    sets = ", ".join(
        ["updated_at = now() - make_interval(secs => :age)"] + [f"{c} = :{c}" for c in columns]
    )
    with database.engine.begin() as connection:
        connection.execute(
            text(f"UPDATE messages SET {sets} WHERE id = :id"),
            {"id": message_id, "age": seconds, **columns},
        )


def test_a_queued_row_whose_queue_message_was_lost_is_enqueued_again(
    stack: Stack, database: Database, smtp_sink: SmtpSink
) -> None:
    # GIVEN an accepted message whose queue message is gone (the API died
    # between its commit and the SQS send, or the record was lost)
    _, accepted = stack.send()
    assert len(_drain(stack)) == 1
    _age(database, accepted["id"], 1000)  # past the default 900 s
    # WHEN the reconciler runs (the scheduled function's handler)
    counts = run_reconciler({}, FakeLambdaContext("mailroom-reconciler"), stack.services)
    # THEN the message is back on the queue, with a requeued event...
    assert counts["requeued"] == 1
    stack.run_worker_once()
    # ...and the worker sends it
    assert len(smtp_sink.received) == 1
    view = stack.status(accepted["id"])
    assert view["status"] == "sent"
    assert [e["type"] for e in view["events"]] == ["accepted", "requeued", "sent"]


def test_a_dead_workers_claim_is_requeued_and_a_fresh_row_left_alone(
    stack: Stack, database: Database
) -> None:
    # GIVEN one message claimed by a worker that died long ago, one just accepted
    _, stuck = stack.send()
    _, fresh = stack.send()
    _drain(stack)
    with SqlUnitOfWork(database) as uow:
        uow.messages.claim([uuid.UUID(stuck["id"])], uuid.uuid4(), lease_seconds=1)
        uow.commit()
    _age(database, stuck["id"], 300, lease_expires_at=datetime.now(UTC) - timedelta(seconds=200))
    # WHEN the reconciler runs
    report = reconcile(stack.services.uow(), stack.services.queue, POLICY, now=datetime.now(UTC))
    # THEN only the stuck one is re-enqueued, reading queued again
    assert (report.requeued, report.ended) == (1, 0)
    assert _drain(stack) == [{"message_id": stuck["id"]}]
    with SqlUnitOfWork(database) as uow:
        row = uow.messages.get(uuid.UUID(stuck["id"]))
    assert row is not None
    assert (row.status, row.lease_expires_at) == (MessageStatus.QUEUED, None)
    # ...and a second pass right away does nothing more (it waits stale_after again)
    again = reconcile(stack.services.uow(), stack.services.queue, POLICY, now=datetime.now(UTC))
    assert again.requeued == 0
    with SqlUnitOfWork(database) as uow:
        untouched = uow.messages.get(uuid.UUID(fresh["id"]))
    assert untouched is not None
    assert untouched.status is MessageStatus.QUEUED
    assert EventType.REQUEUED not in [e.type for e in uow_events(database, fresh["id"])]


def test_an_exhausted_row_ends_failed_with_the_reason(stack: Stack, database: Database) -> None:
    # GIVEN a message whose workers kept dying: claimed four times, never recorded
    _, accepted = stack.send()
    _drain(stack)
    _age(database, accepted["id"], 300, claims=4, last_error="transient: smtp: timed out")
    # WHEN the reconciler runs
    report = reconcile(stack.services.uow(), stack.services.queue, POLICY, now=datetime.now(UTC))
    # THEN it is failed with the reason, not queued again
    assert (report.requeued, report.ended) == (0, 1)
    assert _drain(stack) == []
    view = stack.status(accepted["id"])
    assert view["status"] == "failed"
    last = view["events"][-1]
    assert last["type"] == EventType.FAILED.value
    assert last["detail"]["retries_exhausted"] is True
    assert "retries_exhausted" in last["detail"]["error"]
    assert "transient: smtp: timed out" in last["detail"]["error"]
