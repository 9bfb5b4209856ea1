"""Idempotency keys on the in-memory fakes: holds, replays, releases, expiry (issue 7)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mailroom.domain.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidRequest
from mailroom.services import idempotency
from tests.fakes import FakeUnitOfWork

CLIENT = uuid.uuid4()
BODY: dict[str, object] = {
    "template": "welcome",
    "to": ["ada@example.com"],
    "props": {"name": "Ada"},
}


def _hold(uow: FakeUnitOfWork, body: dict[str, object] = BODY) -> idempotency.Hold:
    begun = idempotency.begin(uow, CLIENT, "k-1", idempotency.fingerprint(body))
    assert isinstance(begun, idempotency.Hold)
    return begun


def test_the_fingerprint_ignores_key_order_but_not_values() -> None:
    same = {"props": {"name": "Ada"}, "to": ["ada@example.com"], "template": "welcome"}
    assert idempotency.fingerprint(BODY) == idempotency.fingerprint(same)
    assert idempotency.fingerprint(BODY) != idempotency.fingerprint({**BODY, "to": ["b@x.io"]})


def test_a_completed_key_replays_and_refuses_another_body() -> None:
    # GIVEN a key completed with its message and answer
    uow = FakeUnitOfWork()
    hold = _hold(uow)
    message_id = uuid.uuid4()
    with uow:
        idempotency.complete(uow, hold, message_id, {"id": str(message_id), "status": "queued"})
        uow.commit()
    # WHEN the same request comes again: the original answer
    replay = idempotency.begin(uow, CLIENT, "k-1", idempotency.fingerprint(BODY))
    assert replay == idempotency.Replay(message_id, {"id": str(message_id), "status": "queued"})
    # WHEN another body comes with the key: refused
    with pytest.raises(IdempotencyKeyReused):
        idempotency.begin(uow, CLIENT, "k-1", idempotency.fingerprint({**BODY, "to": ["b@x.io"]}))


def test_a_key_in_flight_answers_in_progress_until_released() -> None:
    # GIVEN a request holding the key
    uow = FakeUnitOfWork()
    hold = _hold(uow)
    # THEN a duplicate meanwhile is told to wait
    with pytest.raises(IdempotencyInProgress):
        idempotency.begin(uow, CLIENT, "k-1", idempotency.fingerprint(BODY))
    # WHEN the first is refused (nothing accepted) and releases the key
    idempotency.release(uow, hold)
    # THEN a retry holds it afresh
    assert isinstance(
        idempotency.begin(uow, CLIENT, "k-1", idempotency.fingerprint(BODY)), idempotency.Hold
    )


def test_an_abandoned_hold_and_an_expired_key_are_taken_over() -> None:
    uow = FakeUnitOfWork()
    _hold(uow)
    # WHEN the holder died (no release) and STALE_HOLD passed
    uow.idempotency.now = datetime.now(UTC) + idempotency.STALE_HOLD + timedelta(seconds=1)
    assert isinstance(_hold(uow), idempotency.Hold)
    # WHEN a completed key is past its 24 hours, even another body may use it
    uow.idempotency.now = datetime.now(UTC) + idempotency.KEY_TTL + timedelta(minutes=2)
    assert isinstance(_hold(uow, {**BODY, "to": ["b@x.io"]}), idempotency.Hold)


def test_keys_are_per_client_and_must_be_printable() -> None:
    uow = FakeUnitOfWork()
    _hold(uow)
    other = idempotency.begin(uow, uuid.uuid4(), "k-1", idempotency.fingerprint(BODY))
    assert isinstance(other, idempotency.Hold)
    for bad in ("", "x" * 256, "tab\there", "é"):
        with pytest.raises(InvalidRequest):
            idempotency.validate_key(bad)


def test_an_enqueue_failure_answers_503_and_frees_the_key_for_the_retry() -> None:
    # GIVEN the send API with a queue that refuses
    from tests.unit.test_api import Api

    api = Api(queue_fails=True)
    # WHEN a keyed send fails to enqueue
    status, body, _ = api.call(api.send_event(Idempotency_Key="order-7"))
    # THEN 503, the row is visible as failed with the reason
    assert (status, body["error"]["code"]) == (503, "enqueue_failed")
    (failed_id,) = list(api.uow.messages.rows)
    failed = api.uow.messages.rows[failed_id]
    assert (failed.status.value, failed.last_error) == ("failed", "enqueue_failed: queue is down")
    # WHEN the queue is back and the client retries with the same key
    api.queue.fail = False
    status, body, _ = api.call(api.send_event(Idempotency_Key="order-7"))
    # THEN it is accepted as a new message (the failed one was never sent)
    assert status == 202
    assert body["id"] != str(failed_id)
    assert [message_id for message_id, _ in api.queue.sent] == [uuid.UUID(body["id"])]
