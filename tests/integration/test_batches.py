"""Bulk batches (issue 17) on real PostgreSQL, Redis, and S3 and SQS from moto."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.queue import MessageQueue, QueueEntry, SqsMessageQueue
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.model import MessageStatus
from mailroom.entrypoints.api import create_api
from mailroom.entrypoints.batches import batch_routes
from mailroom.services.batches import plan_batch
from mailroom.services.clients import RegisteredClient, register_client
from tests.events import FakeLambdaContext, request_event

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


class Killed(BaseException):
    """Stands for the planner's process dying: nothing after it runs."""


class BatchStack:
    def __init__(
        self, database: Database, redis_url: str, queue_url: str, **client_options: Any
    ) -> None:
        self.database = database
        self.queue_url = queue_url
        sqs = boto3.client("sqs", region_name="us-east-1")
        self.sqs = sqs
        self.planner_queue_url = sqs.create_queue(QueueName=f"planner-{uuid.uuid4().hex[:8]}")[
            "QueueUrl"
        ]
        self.bucket = f"batches-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=self.bucket)
        self.settings = Settings(
            database_url=database.engine.url.render_as_string(hide_password=False),
            redis_url=redis_url,
            queue_url=queue_url,
            planner_queue_url=self.planner_queue_url,
            batch_uploads_bucket=self.bucket,
            templates_dir=TEMPLATES,
            planner_chunk_size=50,
        )
        self.services: Services = bootstrap(self.settings)
        self.client: RegisteredClient = register_client(
            self.services.uow(),
            self.services.hasher,
            name=f"acme-{uuid.uuid4().hex[:6]}",
            **client_options,
        )
        self.api = create_api(
            [batch_routes(lambda: self.services)],
            max_request_bytes=lambda: self.settings.batch_max_request_bytes,
        )

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        status, answer, _ = self.call_with_headers(method, path, body, query)
        return status, answer

    def call_with_headers(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        event = request_event(
            method,
            path,
            query=query,
            body=body,
            X_Api_Key=self.client.api_key,
            X_Api_Secret=self.client.api_secret,
        )
        response = self.api.resolve(event, FakeLambdaContext())
        headers = {**response.get("headers", {}), **response.get("multiValueHeaders", {})}
        return response["statusCode"], json.loads(response["body"]), headers

    def plan(self, batch_id: str, queue: MessageQueue | None = None, **options: Any) -> None:
        plan_batch(
            self.services.uow(),
            queue or self.services.queue,
            self.services.recipient_files,
            batch_id=uuid.UUID(batch_id),
            chunk_size=options.pop("chunk_size", 50),
            **options,
        )

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.database.engine.connect() as connection:
            return list(connection.execute(text(sql), params).all())

    def drain(self, url: str | None = None) -> list[str]:
        """Every message id on the queue (received once, deleted)."""
        ids: list[str] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=url or self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not got:
                return ids
            for message in got:
                body = json.loads(message["Body"])
                ids.append(body.get("message_id") or body.get("batch_id"))
                self.sqs.delete_message(
                    QueueUrl=url or self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str) -> BatchStack:
    return BatchStack(database, redis_url, queue_url)


def recipients(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"to": f"user{i}@example.com", "props": {"name": f"User {i}"}, "metadata": {"n": i}}
        for i in range(start, start + count)
    ]


def create(stack: BatchStack, people: list[dict[str, Any]], **extra: Any) -> str:
    status, body = stack.call(
        "POST", "/v1/batches", {"template": "welcome", "recipients": people, **extra}
    )
    assert status == 202, body
    assert body["status"] == "accepted"
    assert body["total"] == len(people)
    return str(body["id"])


def counters(stack: BatchStack, batch_id: str) -> dict[str, Any]:
    status, body = stack.call("GET", f"/v1/batches/{batch_id}")
    assert status == 200, body
    return body


def test_an_inline_batch_plans_every_recipient_once_with_reasons(stack: BatchStack) -> None:
    # GIVEN 120 recipients with a bad address, a duplicate (other case) and a suppressed one
    people = recipients(120)
    people[5]["to"] = "not-an-address"
    people[7]["to"] = "USER3@example.com"
    people[9]["to"] = "blocked@example.com"
    with stack.database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO suppressions (address, reason, source) "
                "VALUES ('blocked@example.com', 'hard_bounce', 'test')"
            )
        )
    batch_id = create(stack, people)
    assert stack.drain(stack.planner_queue_url) == [batch_id]

    # WHEN the planner runs
    stack.plan(batch_id)

    # THEN 117 messages exist, each enqueued once, and each other recipient has its reason
    messages = stack.rows(
        "SELECT id, batch_index FROM messages WHERE batch_id = :b", b=uuid.UUID(batch_id)
    )
    assert len(messages) == 117
    assert sorted(str(m[0]) for m in messages) == sorted(stack.drain())
    body = counters(stack, batch_id)
    assert (body["planned"], body["queued"], body["rejected"]) == (120, 117, 1)
    assert (body["suppressed"], body["duplicates"], body["status"]) == (1, 1, "sending")
    status, page = stack.call(
        "GET", f"/v1/batches/{batch_id}/recipients", query={"status": "duplicate"}
    )
    assert status == 200
    assert [(r["index"], r["address"]) for r in page["recipients"]] == [(7, "user3@example.com")]
    _, page = stack.call("GET", f"/v1/batches/{batch_id}/recipients", query={"status": "rejected"})
    assert page["recipients"][0]["index"] == 5
    assert "@-sign" in page["recipients"][0]["reason"]
    _, page = stack.call(
        "GET", f"/v1/batches/{batch_id}/recipients", query={"status": "suppressed"}
    )
    assert page["recipients"][0]["reason"] == "suppressed: hard_bounce"


def test_duplicates_are_sent_when_the_batch_allows_them(stack: BatchStack) -> None:
    # GIVEN a batch naming one address twice that allows duplicates
    people = [{"to": "ada@example.com"}, {"to": "ada@example.com"}]
    batch_id = create(stack, people, allow_duplicates=True)
    # WHEN it is planned
    stack.plan(batch_id)
    # THEN both get a message
    assert counters(stack, batch_id)["queued"] == 2


def test_a_batchs_tracking_choice_reaches_every_message(stack: BatchStack) -> None:
    # GIVEN a batch asking for open and click tracking (issue 21)
    people = [{"to": "ada@example.com"}, {"to": "bob@example.com"}]
    batch_id = create(stack, people, tracking={"opens": True, "clicks": True})
    # WHEN it is planned
    stack.plan(batch_id)
    # THEN every message carries it, as a single send's would
    with stack.services.uow() as uow:
        ids = [
            row[0] for row in stack.rows("SELECT id FROM messages WHERE batch_id = :b", b=batch_id)
        ]
        options = [uow.messages.get(message_id) for message_id in ids]
    assert len(options) == 2
    assert all(
        m is not None and dict(m.options.tracking or ()) == {"opens": True, "clicks": True}
        for m in options
    )


def test_an_unknown_queue_or_relay_is_refused_with_nothing_written(stack: BatchStack) -> None:
    # GIVEN a client with neither a queue "newsletter" nor a relay "relay"
    before = stack.rows("SELECT count(*) FROM batches")[0][0]
    for field, value, code in (
        ("queue", "newsletter", "unknown_queue"),
        ("smtp_config", "relay", "unknown_smtp_config"),
    ):
        # WHEN a batch names one
        status, body = stack.call(
            "POST",
            "/v1/batches",
            {"template": "welcome", "recipients": [{"to": "ada@example.com"}], field: value},
        )
        # THEN it is a 422 naming the field, as /v1/send's
        assert (status, body["error"]["code"]) == (422, code), body
        assert body["error"]["details"][0]["field"] == field
    # AND no batch was written
    assert stack.rows("SELECT count(*) FROM batches")[0][0] == before


class DyingQueue(SqsMessageQueue):
    """The real queue, but the process dies at the n-th call (before the send)."""

    def __init__(self, queue_url: str, die_at: int) -> None:
        super().__init__(queue_url, "us-east-1")
        self.calls = 0
        self.die_at = die_at

    def enqueue_many(self, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        self.calls += 1
        if self.calls == self.die_at:
            raise Killed
        return super().enqueue_many(entries)


def test_a_planner_killed_mid_plan_resumes_with_no_duplicate_and_no_gap(
    stack: BatchStack,
) -> None:
    # GIVEN a batch of 500, and a planner killed after writing its third chunk
    # (written and committed, not yet enqueued)
    batch_id = create(stack, recipients(500))
    with pytest.raises(Killed):
        stack.plan(batch_id, queue=DyingQueue(stack.queue_url, die_at=3))
    written = stack.rows("SELECT count(*) FROM messages WHERE batch_id = :b", b=uuid.UUID(batch_id))
    assert written[0][0] == 150
    # ... and a second run killed between chunks
    calls = iter(range(100))
    with pytest.raises(Killed):
        stack.plan(batch_id, keep_going=lambda: next(calls) < 2 or _die())

    # WHEN a third run plans the rest
    stack.plan(batch_id)

    # THEN every recipient has exactly one message, every message is on the queue once
    rows = stack.rows(
        "SELECT id, batch_index FROM messages WHERE batch_id = :b ORDER BY batch_index",
        b=uuid.UUID(batch_id),
    )
    assert [index for _, index in rows] == list(range(500))
    queued = stack.drain()
    assert len(queued) == 500
    assert sorted(queued) == sorted(str(message_id) for message_id, _ in rows)
    body = counters(stack, batch_id)
    assert (body["planned"], body["queued"], body["total"]) == (500, 500, 500)


def _die() -> bool:
    raise Killed


def test_counters_agree_with_the_rows_after_outcomes(stack: BatchStack) -> None:
    # GIVEN a planned batch of 200
    batch_id = create(stack, recipients(200))
    stack.plan(batch_id)
    key = uuid.UUID(batch_id)
    # WHEN outcomes arrive by separate statements, as worker and feedback write them
    with stack.database.engine.begin() as connection:
        for status, low, high in (
            ("sent", 0, 120),
            ("failed", 120, 130),
            ("delivered", 0, 90),
            ("bounced", 90, 95),
        ):
            connection.execute(
                text(
                    "UPDATE messages SET status = :s WHERE batch_id = :b "
                    "AND batch_index >= :lo AND batch_index < :hi"
                ),
                {"s": status, "b": key, "lo": low, "hi": high},
            )
    # THEN every counter equals its count of rows
    body = counters(stack, batch_id)
    by_status = dict(
        stack.rows(
            "SELECT status, count(*) FROM messages WHERE batch_id = :b GROUP BY status", b=key
        )
    )
    assert body["queued"] == by_status["queued"] == 70
    assert body["delivered"] == by_status["delivered"] == 90
    assert body["bounced"] == by_status["bounced"] == 5
    assert body["failed"] == by_status["failed"] == 10
    assert body["sent"] == 120  # handed over: delivered and bounced included, once each
    assert body["rate_per_minute"] > 0


def test_a_claim_leaves_the_batch_row_alone_and_the_outcome_counts(stack: BatchStack) -> None:
    # GIVEN a planned batch of 20 (the planner's own updates are done)
    batch_id = create(stack, recipients(20))
    stack.plan(batch_id)
    key = uuid.UUID(batch_id)
    ids = [
        row[0]
        for row in stack.rows(
            "SELECT id FROM messages WHERE batch_id = :b ORDER BY batch_index", b=key
        )
    ]
    version = "SELECT xmin::text, updated_at, queued_count FROM batches WHERE id = :b"
    (before,) = stack.rows(version, b=key)

    # WHEN a worker claims ten of its messages (queued -> sending moves no count)
    token = uuid.uuid4()
    with stack.services.uow() as uow:
        claimed = uow.messages.claim_for_send(ids[:10], token, 60).messages
        uow.commit()

    # THEN the batch row was not written: concurrent workers claiming the same
    # batch do not wait on its row lock (issue 17's batch-vs-single rate)
    assert len(claimed) == 10
    assert stack.rows(version, b=key) == [before]
    assert counters(stack, batch_id)["queued"] == 20

    # WHEN their outcomes are written, as the worker writes them
    for message in claimed:
        message.status = MessageStatus.SENT
        message.attempts = 1
    with stack.services.uow() as uow:
        written = uow.messages.record_outcomes_with_events(token, claimed, [])
        uow.commit()

    # THEN the counters move by the outcome
    assert len(written) == 10
    (after,) = stack.rows(version, b=key)
    assert after[0] != before[0]
    body = counters(stack, batch_id)
    assert (body["queued"], body["sent"]) == (10, 10)


def test_cancel_mid_batch_leaves_no_message_sent_after_it(stack: BatchStack) -> None:
    # GIVEN a planned batch of 100, ten claimed by a worker, one of them with an expired lease
    batch_id = create(stack, recipients(100))
    stack.plan(batch_id)
    key = uuid.UUID(batch_id)
    ids = [
        row[0]
        for row in stack.rows(
            "SELECT id FROM messages WHERE batch_id = :b ORDER BY batch_index", b=key
        )
    ]
    with stack.services.uow() as uow:
        claimed = uow.messages.claim_for_send(ids[:10], uuid.uuid4(), 60).messages
        uow.commit()
    assert len(claimed) == 10
    with stack.database.engine.begin() as connection:
        connection.execute(
            text("UPDATE messages SET lease_expires_at = now() - interval '1 s' WHERE id = :i"),
            {"i": ids[0]},
        )

    # WHEN the batch is cancelled, and workers then try every message
    status, body = stack.call("POST", f"/v1/batches/{batch_id}/cancel")
    assert status == 200, body
    with stack.services.uow() as uow:
        late = uow.messages.claim_for_send(ids, uuid.uuid4(), 60).messages
        uow.commit()

    # THEN nothing more is claimed (not even the expired claim), 90 read cancelled
    assert late == []
    assert body["status"] == "cancelled"
    assert body["cancelled"] == 90
    assert counters(stack, batch_id)["queued"] == 10  # the ten in flight
    # ... and a second cancel, like any after the end, is 409
    status, again = stack.call("POST", f"/v1/batches/{batch_id}/cancel")
    assert status == 409
    assert again["error"]["code"] == "batch_state_conflict"


def test_10001_inline_recipients_are_refused_and_nothing_is_written(stack: BatchStack) -> None:
    status, body = stack.call(
        "POST", "/v1/batches", {"template": "welcome", "recipients": recipients(10_001)}
    )
    assert status == 422, body
    assert stack.rows("SELECT count(*) FROM batches")[0][0] == 0


def test_unknown_template_and_to_are_refused(stack: BatchStack) -> None:
    status, body = stack.call(
        "POST", "/v1/batches", {"template": "nope", "recipients": recipients(1)}
    )
    assert (status, body["error"]["code"]) == (422, "unknown_template")
    status, body = stack.call(
        "POST",
        "/v1/batches",
        {"template": "welcome", "to": ["a@example.com"], "recipients": recipients(1)},
    )
    assert status == 422


def upload(url: str, data: bytes) -> None:
    # Without a Content-Type urllib sends a form's, whose body moto drops.
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "application/x-ndjson"}
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200


def test_an_ndjson_upload_records_malformed_lines_and_plans_the_rest(stack: BatchStack) -> None:
    # GIVEN an upload batch whose file has a malformed line and a bad shape
    status, body = stack.call(
        "POST", "/v1/batches", {"template": "welcome", "recipients_upload": True}
    )
    assert (status, body["status"]) == (202, "awaiting_upload"), body
    batch_id = body["id"]
    # Start before the upload: 409 upload_missing
    status, early = stack.call("POST", f"/v1/batches/{batch_id}/start")
    assert (status, early["error"]["code"]) == (409, "upload_missing")
    lines = [json.dumps({"to": f"u{i}@example.com", "props": {"i": i}}) for i in range(300)]
    lines[10] = "{not json"
    lines[20] = json.dumps({"props": {}})
    upload(body["upload_url"], ("\n".join(lines) + "\n").encode())

    # WHEN it starts (twice), the URL is used again, and the planner runs
    status, started = stack.call("POST", f"/v1/batches/{batch_id}/start")
    assert (status, started["status"]) == (200, "accepted"), started
    status, twice = stack.call("POST", f"/v1/batches/{batch_id}/start")
    assert (status, twice["error"]["code"]) == (409, "batch_state_conflict")
    upload(body["upload_url"], b'{"to": "intruder@example.com"}\n')
    stack.plan(batch_id)

    # THEN 298 messages, and the two bad lines by line number; the second PUT changed nothing
    done = counters(stack, batch_id)
    assert (done["total"], done["queued"], done["rejected"]) == (300, 298, 2)
    _, page = stack.call("GET", f"/v1/batches/{batch_id}/recipients", query={"status": "rejected"})
    assert [r["line"] for r in page["recipients"]] == [11, 21]
    assert "malformed line 11" in page["recipients"][0]["reason"]
    assert not stack.rows("SELECT 1 FROM messages WHERE recipient = 'intruder@example.com'")


def test_a_csv_without_an_email_column_is_refused_at_start(stack: BatchStack) -> None:
    status, body = stack.call(
        "POST",
        "/v1/batches",
        {"template": "welcome", "recipients_upload": True, "upload_format": "csv"},
    )
    assert status == 202
    upload(body["upload_url"], b"name,phone\nAda,123\n")
    status, answer = stack.call("POST", f"/v1/batches/{body['id']}/start")
    assert (status, answer["error"]["code"]) == (422, "no_email_column")
    assert "no email column" in answer["error"]["message"]


def test_a_csv_upload_resumes_mid_file_from_its_byte_offset(stack: BatchStack) -> None:
    # GIVEN a CSV of 230 rows with a quoted multi-line field and a short row
    _status, body = stack.call(
        "POST",
        "/v1/batches",
        {"template": "welcome", "recipients_upload": True, "upload_format": "csv"},
    )
    rows = [f"User {i},u{i}@example.com" for i in range(230)]
    rows[3] = '"Multi\nLine",u3@example.com'
    rows[100] = "short"
    upload(body["upload_url"], ("name,Email\n" + "\n".join(rows) + "\n").encode())
    assert stack.call("POST", f"/v1/batches/{body['id']}/start")[0] == 200
    # WHEN the planner is stopped after two chunks, then resumed
    calls = iter(range(100))
    stack.plan(body["id"], keep_going=lambda: next(calls) < 1)
    stack.plan(body["id"])
    # THEN every row is planned once: 229 messages, the short row rejected with its line
    done = counters(stack, body["id"])
    assert (done["total"], done["queued"], done["rejected"]) == (230, 229, 1)
    _, page = stack.call(
        "GET", f"/v1/batches/{body['id']}/recipients", query={"status": "rejected"}
    )
    assert page["recipients"][0]["line"] == 103
    props = stack.rows(
        "SELECT props FROM messages WHERE batch_id = :b AND batch_index = 3",
        b=uuid.UUID(body["id"]),
    )
    assert props[0][0] == {"name": "Multi\nLine"}


def test_retry_failed_sends_again_only_the_transiently_failed(stack: BatchStack) -> None:
    # GIVEN a planned batch of 6: two failed after their retries ran out, one
    # refused for good, the rest sent
    batch_id = create(stack, recipients(6))
    stack.plan(batch_id)
    stack.drain()
    key = uuid.UUID(batch_id)
    ids = [
        row[0]
        for row in stack.rows(
            "SELECT id FROM messages WHERE batch_id = :b ORDER BY batch_index", b=key
        )
    ]
    with stack.database.engine.begin() as connection:
        connection.execute(
            text("UPDATE messages SET status = 'sent' WHERE batch_id = :b"), {"b": key}
        )
        connection.execute(
            text("UPDATE messages SET status = 'failed' WHERE id = ANY(:ids)"),
            {"ids": ids[:3]},
        )
        for message_id, transient in zip(ids[:3], (True, True, False), strict=True):
            detail = {"error": "x", "retries_exhausted": True} if transient else {"error": "x"}
            connection.execute(
                text(
                    "INSERT INTO message_events (message_id, type, detail) "
                    "VALUES (:m, 'failed', CAST(:d AS jsonb))"
                ),
                {"m": message_id, "d": json.dumps(detail)},
            )
    assert counters(stack, batch_id)["status"] == "finished"

    # WHEN the client asks for the failed ones to be retried
    status, body = stack.call("POST", f"/v1/batches/{batch_id}/retry-failed")

    # THEN the two transient ones are queued and enqueued again, the permanent one stays
    assert status == 200, body
    assert body["retried"] == 2
    assert (body["batch"]["status"], body["batch"]["queued"], body["batch"]["failed"]) == (
        "sending",
        2,
        1,
    )
    assert sorted(stack.drain()) == sorted(str(i) for i in ids[:2])


def test_a_batch_message_reads_accepted_and_counts_without_an_event_row(
    stack: BatchStack,
) -> None:
    # GIVEN a planned batch of three, one with a tab and a backslash in its props
    people = recipients(3)
    people[1]["props"] = {"name": "Tab\there \\ and\nnewline", "city": "Zürich"}
    batch_id = create(stack, people)
    stack.plan(batch_id)
    messages = stack.rows(
        "SELECT id, props, trace_id FROM messages WHERE batch_id = :b ORDER BY batch_index",
        b=uuid.UUID(batch_id),
    )
    assert len(messages) == 3

    # THEN no accepted event row was written for them (the batch row is their acceptance)
    written = stack.rows(
        "SELECT count(*) FROM message_events WHERE message_id = ANY(:ids)",
        ids=[m[0] for m in messages],
    )
    assert written[0][0] == 0
    # AND the props went through COPY's escaping unchanged
    assert messages[1][1]["name"] == "Tab\there \\ and\nnewline"
    assert messages[1][1]["city"] == "Zürich"
    # AND each message's history still starts with accepted, naming its batch
    from mailroom.domain.model import EventType
    from mailroom.domain.tenancy import QuotaPeriod

    with stack.services.uow() as uow:
        events = uow.messages.events(messages[0][0])
        period = QuotaPeriod.containing(events[0].at)
        counted = uow.messages.count_accepted(stack.client.client.id, period.start, period.end)
    assert [e.type for e in events] == [EventType.ACCEPTED]
    assert events[0].detail == {"trace_id": messages[0][2], "batch_id": batch_id}
    # AND the quota's reconciliation counts them
    assert counted == 3
