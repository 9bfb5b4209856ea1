"""Every path that puts a message on SQS again uses its queue's band and client group (issue 20).

Real PostgreSQL and Redis, moto's SQS with one queue per priority band. The
send path chooses the band at acceptance; these are the later paths: the
reconciler, a message's retry, a batch's retry-failed, a reschedule's
near-due release, and the batch planner (and its catch-up after a kill).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.queue import QueueEntry, SqsMessageQueue
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.batches import batch_routes
from mailroom.entrypoints.queues import queue_routes
from mailroom.entrypoints.schedules import message_schedule_routes
from mailroom.entrypoints.smtp_configs import smtp_config_routes
from mailroom.services.batches import plan_batch
from mailroom.services.reconciler import ReconcilePolicy, reconcile
from tests.events import FakeLambdaContext, request_event
from tests.integration.conftest import SmtpSink
from tests.integration.test_pipeline import database_url_of
from tests.integration.test_queues import WELCOME, Stack

pytestmark = pytest.mark.integration

BANDS = ("high", "normal", "low")


class BandStack(Stack):
    """test_queues' three bands, with the batch, reschedule and SMTP-config routes too."""

    def __init__(self, database: Database, redis_url: str, smtp_port: int, **extra: Any) -> None:
        sqs = boto3.client("sqs", region_name="us-east-1")
        suffix = uuid.uuid4().hex[:8]
        bucket = f"batches-{suffix}"
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
        super().__init__(
            database_url_of(database),
            redis_url,
            smtp_port,
            planner_queue_url=sqs.create_queue(QueueName=f"planner-{suffix}")["QueueUrl"],
            batch_uploads_bucket=bucket,
            planner_chunk_size=50,
            secrets_encryption_keys=SecretStr(SecretKeyring.generate_setting()),
            smtp_relay_allow_internal_hosts=True,
            **extra,
        )
        self.database = database
        provider = lambda: self.services  # noqa: E731 - the routes take a provider
        self.api = create_api(
            [
                send_routes(provider),
                status_routes(provider),
                queue_routes(provider),
                batch_routes(provider),
                message_schedule_routes(provider),
                smtp_config_routes(provider),
            ],
            max_request_bytes=lambda: self.settings.batch_max_request_bytes,
        )

    @property
    def client_id(self) -> str:
        return str(self.client.client.id)

    def records(self, band: str) -> list[tuple[str, str | None]]:
        """Every record on ``band`` now, as (message id, MessageGroupId); deleted."""
        found: list[tuple[str, str | None]] = []
        while True:
            received = self.sqs.receive_message(
                QueueUrl=self.urls[band],
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["MessageGroupId"],
            ).get("Messages", [])
            if not received:
                return found
            for message in received:
                group = message.get("Attributes", {}).get("MessageGroupId")
                found.append((json.loads(message["Body"])["message_id"], group))
                self.sqs.delete_message(
                    QueueUrl=self.urls[band], ReceiptHandle=message["ReceiptHandle"]
                )

    def everywhere(self) -> dict[str, list[tuple[str, str | None]]]:
        """Every band's records now (deleted), the empty bands included."""
        return {band: self.records(band) for band in BANDS}

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.database.engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []

    def default_queue_priority(self, priority: int) -> None:
        """The client's default queue (made by a first send) at ``priority``."""
        status, page = self.call("GET", "/v1/queues")
        default = next(q for q in page["queues"] if q["name"] == "default")
        status, body = self.call("PATCH", f"/v1/queues/{default['id']}", {"priority": priority})
        assert status == 200, body

    def batch(self, count: int, **extra: Any) -> tuple[int, dict[str, Any]]:
        people = [{"to": f"user{i}@example.com", "props": {"name": f"U{i}"}} for i in range(count)]
        # The welcome template's props, shared by the batch (each recipient adds its name).
        props = json.loads(WELCOME["body"])["props"]
        return self.call(
            "POST",
            "/v1/batches",
            {"template": "welcome", "props": props, "recipients": people, **extra},
        )

    def plan(
        self,
        batch_id: str,
        queue: SqsMessageQueue | None = None,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> None:
        plan_batch(
            self.services.uow(),
            queue or self.services.queue,
            self.services.recipient_files,
            batch_id=uuid.UUID(batch_id),
            chunk_size=50,
            keep_going=keep_going,
        )

    def work_all(self) -> int:
        """Worker invocations on every band until none has a record; the records taken."""
        taken = 0
        while True:
            round_taken = sum(self.work(band)[1] for band in BANDS)
            if not round_taken:
                return taken
            taken += round_taken

    def peek_groups(self, band: str) -> list[str | None]:
        """The MessageGroupId of up to ten records on ``band``, left visible for the worker."""
        received = self.sqs.receive_message(
            QueueUrl=self.urls[band],
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageSystemAttributeNames=["MessageGroupId"],
        ).get("Messages", [])
        assert received
        return [m.get("Attributes", {}).get("MessageGroupId") for m in received]

    def batch_messages(self, batch_id: str) -> list[str]:
        rows = self.sql(
            "SELECT id::text FROM messages WHERE batch_id = :b ORDER BY batch_index", b=batch_id
        )
        return [row[0] for row in rows]


@pytest.fixture
def stack(database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink) -> BandStack:
    return BandStack(database, redis_url, smtp_sink.port)


def only_on(band: str, ids: Sequence[str], client_id: str) -> dict[str, list[Any]]:
    """``everywhere`` when just ``ids`` are on ``band``, each in the client's group."""
    expected: dict[str, list[Any]] = {b: [] for b in BANDS}
    expected[band] = sorted((i, client_id) for i in ids)
    return expected


def sorted_bands(found: dict[str, list[tuple[str, str | None]]]) -> dict[str, list[Any]]:
    return {band: sorted(records, key=lambda r: r[0]) for band, records in found.items()}


POLICY = ReconcilePolicy(
    stale_after=timedelta(seconds=60), max_attempts=2, max_claims=4, batch_size=100
)


def test_the_reconciler_puts_a_stranded_message_back_on_its_queues_band(
    stack: BandStack,
) -> None:
    # GIVEN one message of a priority-10 queue and one of the default queue
    # (made priority 2), both queued but whose records were lost
    stack.create("urgent", priority=10)
    named = stack.send(queue="urgent")[1]["id"]
    plain = stack.send()[1]["id"]
    stack.default_queue_priority(2)
    stack.everywhere()  # the records are lost
    stack.sql(
        "UPDATE messages SET updated_at = now() - interval '1000 seconds' "
        "WHERE id = ANY(CAST(:ids AS uuid[]))",
        ids=[named, plain],
    )
    # WHEN the reconciler runs
    report = reconcile(stack.services.uow(), stack.services.queue, POLICY, now=datetime.now(UTC))
    # THEN each is back on its queue's band, in its client's group
    assert report.requeued == 2
    found = sorted_bands(stack.everywhere())
    assert found == {
        "high": [(named, stack.client_id)],
        "normal": [],
        "low": [(plain, stack.client_id)],
    }


def test_retrying_a_failed_message_sends_it_on_its_queues_band(stack: BandStack) -> None:
    # GIVEN a failed message of a priority-9 queue
    stack.create("urgent", priority=9)
    message_id = stack.send(queue="urgent")[1]["id"]
    stack.everywhere()
    stack.sql(
        "UPDATE messages SET status = 'failed', last_error = 'x' WHERE id = :id", id=message_id
    )
    # WHEN the client retries it
    status, body = stack.call("POST", f"/v1/messages/{message_id}/retry")
    # THEN its record is on the high band, in its client's group
    assert status == 202, body
    assert stack.everywhere() == only_on("high", [message_id], stack.client_id)


def test_the_planner_puts_a_batchs_messages_on_its_queues_band(stack: BandStack) -> None:
    # GIVEN a client whose default queue is priority 9
    stack.send()
    stack.default_queue_priority(9)
    stack.everywhere()
    # WHEN a batch of 120 is accepted and planned (three chunks)
    status, body = stack.batch(120)
    assert status == 202, body
    stack.plan(body["id"])
    # THEN every message is on the high band, in the client's group
    messages = stack.batch_messages(body["id"])
    assert len(messages) == 120
    assert sorted_bands(stack.everywhere()) == only_on("high", messages, stack.client_id)


class DyingBands(SqsMessageQueue):
    """The real bands, but the planner's process dies at its first enqueue."""

    def enqueue_many(self, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        raise SystemExit("killed before the chunk reached SQS")


def test_a_planner_killed_before_enqueueing_resumes_on_the_queues_band(
    stack: BandStack,
) -> None:
    # GIVEN a default queue of priority 1, and a planner killed after writing its first chunk
    stack.send()
    stack.default_queue_priority(1)
    stack.everywhere()
    status, body = stack.batch(60)
    assert status == 202, body
    with pytest.raises(SystemExit):
        stack.plan(body["id"], DyingBands(stack.urls["normal"], "us-east-1"))
    assert stack.everywhere() == only_on("low", [], stack.client_id)
    # WHEN the planner runs again (it first enqueues what the killed run wrote)
    stack.plan(body["id"])
    # THEN every message is on the low band once, in the client's group
    messages = stack.batch_messages(body["id"])
    assert len(messages) == 60
    assert sorted_bands(stack.everywhere()) == only_on("low", messages, stack.client_id)


def test_retry_failed_sends_a_batchs_failed_messages_on_its_queues_band(
    stack: BandStack,
) -> None:
    # GIVEN a planned batch whose first two messages failed after their retries ran out
    stack.send()
    status, body = stack.batch(5)
    stack.plan(body["id"])
    messages = stack.batch_messages(body["id"])
    stack.sql("UPDATE messages SET status = 'sent' WHERE batch_id = :b", b=body["id"])
    stack.sql(
        "UPDATE messages SET status = 'failed' WHERE id = ANY(CAST(:ids AS uuid[]))",
        ids=messages[:2],
    )
    for message_id in messages[:2]:
        stack.sql(
            "INSERT INTO message_events (message_id, type, detail) "
            """VALUES (:m, 'failed', '{"retries_exhausted": true}')""",
            m=message_id,
        )
    # and its client's default queue was since made priority 10
    stack.default_queue_priority(10)
    stack.everywhere()
    # WHEN the client retries the failed ones
    status, retried = stack.call("POST", f"/v1/batches/{body['id']}/retry-failed")
    # THEN both are on the high band, in the client's group
    assert (status, retried["retried"]) == (200, 2), retried
    assert sorted_bands(stack.everywhere()) == only_on("high", messages[:2], stack.client_id)


def test_a_reschedule_to_now_releases_the_message_on_its_queues_band(stack: BandStack) -> None:
    # GIVEN a message of a priority-2 queue scheduled an hour ahead
    stack.create("later", priority=2)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, body = stack.send(queue="later", scheduled_at=at)
    assert (status, body["status"]) == (202, "scheduled"), body
    assert stack.everywhere() == only_on("low", [], stack.client_id)
    # WHEN it is moved to a time already past (due now)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    status, moved = stack.call("PATCH", f"/v1/messages/{body['id']}", {"scheduled_at": past})
    # THEN it is released at once on the low band, in its client's group
    assert status == 200, moved
    assert stack.everywhere() == only_on("low", [body["id"]], stack.client_id)


ADMIN_TOKEN = "queue-bands-test-admin-token-0123456789"


def test_a_dead_letter_redriven_on_the_normal_band_keeps_its_clients_group(
    database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN a message of the default (normal) queue whose record SQS moved to the normal DLQ
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq = sqs.create_queue(QueueName=f"mailroom-normal-dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    stack = BandStack(
        database,
        redis_url,
        smtp_sink.port,
        admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        dead_letter_queue_url=dlq,
    )
    message_id = stack.send()[1]["id"]
    (record,) = sqs.receive_message(QueueUrl=stack.urls["normal"])["Messages"]
    sqs.send_message(QueueUrl=dlq, MessageBody=record["Body"])
    sqs.delete_message(QueueUrl=stack.urls["normal"], ReceiptHandle=record["ReceiptHandle"])
    admin = create_api(admin_routes(lambda: stack.services), max_request_bytes=lambda: 65536)
    # WHEN an operator redrives it
    event = request_event(
        "POST", f"/admin/dlq/{message_id}/redrive", Authorization=f"Bearer {ADMIN_TOKEN}"
    )
    answer = admin.resolve(event, FakeLambdaContext())
    # THEN it is back on the normal band, in its client's group
    assert answer["statusCode"] == 200, answer["body"]
    assert stack.everywhere() == only_on("normal", [message_id], stack.client_id)


# --- Bulk batches through a queue and a relay (issue 20) ----------------------


def message_rows(stack: BandStack, batch_id: str) -> list[Any]:
    return stack.sql(
        "SELECT status, queue_id::text AS queue_id, options FROM messages "
        "WHERE batch_id = :b ORDER BY batch_index",
        b=batch_id,
    )


def test_a_batch_to_a_named_high_priority_queue_goes_on_the_high_band(
    stack: BandStack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a priority-10 queue
    urgent = stack.create("urgent", priority=10)
    # WHEN a batch of 60 names it and is planned (two chunks)
    status, body = stack.batch(60, queue="urgent")
    assert (status, body["status"], body.get("note")) == (202, "accepted", None), body
    stack.plan(body["id"])
    # THEN every message is assigned to the queue and on the high band, in the client's group
    rows = message_rows(stack, body["id"])
    assert {(row.status, row.queue_id) for row in rows} == {("queued", urgent["id"])}
    assert len(rows) == 60
    status, stats = stack.call("GET", f"/v1/queues/{urgent['id']}/stats")
    assert stats["depth"] == {"queued": 60}
    messages = stack.batch_messages(body["id"])
    assert sorted_bands(stack.everywhere()) == only_on("high", messages, stack.client_id)


def test_a_batch_to_a_paused_queue_is_held_and_sent_only_after_resume(
    stack: BandStack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a paused priority-2 queue
    news = stack.create("news", priority=2)
    stack.call("POST", f"/v1/queues/{news['id']}/pause")
    # WHEN a batch of 80 names it
    status, body = stack.batch(80, queue="news")
    # THEN it is accepted, saying the queue is paused
    assert (status, body["status"]) == (202, "accepted"), body
    assert "paused" in body["note"]
    # WHEN the planner writes its first chunk (50), and every band is worked
    stack.plan(body["id"], keep_going=lambda: False)
    assert stack.work_all() == 0
    # THEN those 50 are held in the queue, nothing is on SQS and nothing was sent
    rows = message_rows(stack, body["id"])
    assert [(row.status, row.queue_id) for row in rows] == [("held", news["id"])] * 50
    assert [stack.depth(band) for band in BANDS] == [0, 0, 0]
    assert smtp_sink.received == []
    batch = stack.call("GET", f"/v1/batches/{body['id']}")[1]
    assert (batch["status"], batch["queued"]) == ("planning", 50)
    # WHEN the queue is resumed
    status, resumed = stack.call("POST", f"/v1/queues/{news['id']}/resume")
    # THEN its release puts the 50 on the low band, in the client's group
    assert (status, resumed["released"], resumed["releasing"]) == (200, 50, False)
    assert [stack.depth(band) for band in BANDS] == [0, 0, 50]
    assert set(stack.peek_groups("low")) == {stack.client_id}
    # WHEN the planner writes the rest (the queue now active)
    stack.plan(body["id"])
    # THEN those go straight onto the low band
    assert [stack.depth(band) for band in BANDS] == [0, 0, 80]
    assert {row.status for row in message_rows(stack, body["id"])} == {"queued"}
    # WHEN the bands are worked
    assert stack.work_all() == 80
    # THEN all 80 were sent, once each, and the batch is finished
    assert len(smtp_sink.received) == 80
    batch = stack.call("GET", f"/v1/batches/{body['id']}")[1]
    assert (batch["status"], batch["sent"], batch["queued"]) == ("finished", 80, 0)


def test_an_unknown_or_draining_queue_or_unknown_relay_refuses_a_batch_writing_nothing(
    stack: BandStack,
) -> None:
    # GIVEN a draining queue
    closing = stack.create("closing")
    stack.call("POST", f"/v1/queues/{closing['id']}/drain")
    counts = "SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM messages)"
    before = stack.sql(counts)
    for fields, expected in (
        ({"queue": "nope"}, (422, "unknown_queue")),
        ({"queue": "closing"}, (409, "queue_draining")),
        ({"smtp_config": "no-such-relay"}, (422, "unknown_smtp_config")),
        ({"queue": "closing", "smtp_config": "no-such-relay"}, (422, "unknown_smtp_config")),
    ):
        # WHEN a batch names it
        status, body = stack.batch(3, **fields)
        # THEN it is refused with the code /v1/send gives
        assert (status, body["error"]["code"]) == expected, (fields, body)
    # AND no batch and no message was written, and no planning was asked for
    assert stack.sql(counts) == before
    assert (
        stack.sqs.receive_message(QueueUrl=stack.settings.planner_queue_url).get("Messages", [])
        == []
    )


def test_a_batch_relay_is_its_own_else_its_queues_else_none_and_the_queue_makes_it_bulk(
    stack: BandStack, smtp_sink: SmtpSink
) -> None:
    # GIVEN two relays, and a bulk queue that sends through the first
    relays = []
    for name in ("queue-relay", "batch-relay"):
        status, relay = stack.call(
            "POST",
            "/v1/smtp-configs",
            {"name": name, "host": "127.0.0.1", "port": smtp_sink.port, "security": "none"},
        )
        assert status == 201, relay
        relays.append(relay["id"])
    queue_relay, batch_relay = relays
    stack.create("news", bulk=True, smtp_config_id=queue_relay)
    # WHEN three batches are planned: through the queue, through it naming the
    # other relay (by name), and through neither
    options = {}
    for label, fields in (
        ("queue", {"queue": "news"}),
        ("both", {"queue": "news", "smtp_config": "batch-relay"}),
        ("neither", {}),
    ):
        status, body = stack.batch(2, **fields)
        assert status == 202, body
        stack.plan(body["id"])
        options[label] = [row.options for row in message_rows(stack, body["id"])]
    # THEN the batch's relay wins over the queue's, and the queue's over none
    assert [o.get("smtp_config_id") for o in options["queue"]] == [queue_relay] * 2
    assert [o.get("smtp_config_id") for o in options["both"]] == [batch_relay] * 2
    assert [o.get("smtp_config_id") for o in options["neither"]] == [None] * 2
    # AND the bulk queue made its messages bulk, the others not
    assert [o.get("bulk", False) for o in options["queue"]] == [True, True]
    assert [o.get("bulk", False) for o in options["neither"]] == [False, False]
    # AND all six are sent (both relays are the test's SMTP sink)
    assert stack.work_all() == 6
    assert len(smtp_sink.received) == 6


def test_a_batch_whose_queue_is_deleted_before_planning_goes_through_the_default_queue(
    stack: BandStack,
) -> None:
    # GIVEN a batch accepted for a priority-9 queue, which is then deleted (it held nothing)
    urgent = stack.create("urgent", priority=9)
    status, body = stack.batch(3, queue="urgent")
    assert status == 202, body
    status, deleted = stack.call("DELETE", f"/v1/queues/{urgent['id']}")
    assert (status, deleted["unsent"]) == (200, 0)
    # WHEN it is planned
    stack.plan(body["id"])
    # THEN its messages are the default queue's (no queue_id), on its normal band
    rows = message_rows(stack, body["id"])
    assert [(row.status, row.queue_id) for row in rows] == [("queued", None)] * 3
    messages = stack.batch_messages(body["id"])
    assert sorted_bands(stack.everywhere()) == only_on("normal", messages, stack.client_id)
