"""Bulk batches count against the quota per recipient (issue 17): real PostgreSQL and Redis."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.domain.tenancy import QuotaPeriod
from tests.integration.test_batches import BatchStack, counters, create, recipients, upload


def _used(stack: BatchStack, *, day: bool = False) -> int | None:
    now = datetime.now(UTC)
    period = QuotaPeriod.day_containing(now) if day else QuotaPeriod.containing(now)
    return stack.services.quota.read(stack.client.client.id, period)


def _plan(stack: BatchStack, batch_id: str, chunk_size: int = 50) -> None:
    stack.plan(batch_id, chunk_size=chunk_size, quota=stack.services.quota)


@pytest.fixture
def small(database: Database, redis_url: str, queue_url: str) -> BatchStack:
    return BatchStack(database, redis_url, queue_url, quota_limit=150)


def test_an_inline_batch_over_the_quota_is_refused_as_a_send_is_and_writes_nothing(
    small: BatchStack,
) -> None:
    # GIVEN a client with a quota of 150 that has used 100 of it
    _plan(small, create(small, recipients(100)))
    assert _used(small) == 100

    # WHEN it posts a batch of 51 inline recipients
    status, body, headers = small.call_with_headers(
        "POST", "/v1/batches", {"template": "welcome", "recipients": recipients(51)}
    )

    # THEN 429 quota_exceeded with /v1/send's numbers and Retry-After, and nothing is written
    assert status == 429, body
    assert body["error"]["code"] == "quota_exceeded"
    detail = body["error"]["details"][0]
    assert (detail["quota_limit"], detail["used"]) == (150, 100)
    assert set(detail) == {"quota_limit", "used", "period", "resets_at"}
    assert "Retry-After" in headers
    assert (
        len(small.rows("SELECT id FROM batches WHERE client_id = :c", c=small.client.client.id))
        == 1
    )
    assert _used(small) == 100
    # AND a batch that fits exactly is still accepted
    status, body = small.call(
        "POST", "/v1/batches", {"template": "welcome", "recipients": recipients(50)}
    )
    assert status == 202, body
    assert _used(small) == 150


def test_the_daily_limit_refuses_a_batch_with_its_own_code(
    database: Database, redis_url: str, queue_url: str
) -> None:
    # GIVEN a client whose daily limit (20) is below its monthly quota
    stack = BatchStack(database, redis_url, queue_url, daily_limit=20)

    # WHEN it posts 21 recipients
    status, body = stack.call(
        "POST", "/v1/batches", {"template": "welcome", "recipients": recipients(21)}
    )

    # THEN daily_limit_exceeded, and neither counter moved
    assert (status, body["error"]["code"]) == (429, "daily_limit_exceeded"), body
    assert body["error"]["details"][0]["daily_limit"] == 20
    assert _used(stack, day=True) in (None, 0)
    assert _used(stack) in (None, 0)


def test_recipients_without_a_message_are_given_back_when_planned(small: BatchStack) -> None:
    # GIVEN an inline batch of 120 with a bad address, a duplicate and a suppressed address
    people = recipients(120)
    people[5]["to"] = "not-an-address"
    people[7]["to"] = "USER3@example.com"
    people[9]["to"] = "blocked@example.com"
    with small.database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO suppressions (address, reason, source, client_id) "
                "VALUES ('blocked@example.com', 'hard_bounce', 'test', :c)"
            ),
            {"c": small.client.client.id},
        )
    batch_id = create(small, people)
    # THEN all 120 are counted when it is accepted
    assert _used(small) == 120

    # WHEN the planner writes it
    _plan(small, batch_id)

    # THEN the three that got no message are given back: the counter is the messages written
    assert counters(small, batch_id)["queued"] == 117
    assert _used(small) == 117
    with small.services.uow() as uow:
        period = QuotaPeriod.containing(datetime.now(UTC))
        assert uow.messages.count_accepted(small.client.client.id, period.start, period.end) == 117


def test_an_upload_is_counted_as_planned_and_stops_failed_where_the_quota_ends(
    small: BatchStack,
) -> None:
    # GIVEN an uploaded file of 200 recipients, one suppressed, for a quota of 150
    with small.database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO suppressions (address, reason, source) "
                "VALUES ('u3@example.com', 'complaint', 'test')"
            )
        )
    status, body = small.call(
        "POST", "/v1/batches", {"template": "welcome", "recipients_upload": True}
    )
    assert status == 202, body
    assert _used(small) in (None, 0)  # nothing is counted before the file is read
    batch_id = body["id"]
    lines = [json.dumps({"to": f"u{i}@example.com"}) for i in range(200)]
    upload(body["upload_url"], ("\n".join(lines) + "\n").encode())
    status, _ = small.call("POST", f"/v1/batches/{batch_id}/start")
    assert status == 200

    # WHEN the planner reads it in chunks of 50
    _plan(small, batch_id)

    # THEN three chunks fit (149 messages: the suppressed one is given back), the fourth
    # does not: the batch reads failed with the quota's refusal, nothing of it is written
    done = counters(small, batch_id)
    assert (done["status"], done["planned"], done["queued"]) == ("failed", 150, 149), done
    assert done["error"].startswith("quota_exceeded: the monthly quota of 150")
    assert _used(small) == 149
    written = small.rows("SELECT count(*) FROM messages WHERE batch_id = :b", b=uuid.UUID(batch_id))
    assert written[0][0] == 149


def test_cancelling_an_inline_batch_gives_back_the_recipients_not_planned(
    small: BatchStack,
) -> None:
    # GIVEN an inline batch of 120, of which the planner wrote one chunk of 50
    batch_id = create(small, recipients(120))
    assert _used(small) == 120
    small.plan(batch_id, chunk_size=50, quota=small.services.quota, keep_going=lambda: False)
    assert counters(small, batch_id)["planned"] == 50

    # WHEN the client cancels it
    status, body = small.call("POST", f"/v1/batches/{batch_id}/cancel")

    # THEN the 70 never planned are given back; the 50 planned (now cancelled) still count
    assert (status, body["status"], body["cancelled"]) == (200, "cancelled", 50), body
    assert _used(small) == 50
