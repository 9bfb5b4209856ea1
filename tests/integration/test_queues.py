"""Per-client queues (issue 20) on real PostgreSQL, Redis, moto's SQS and an SMTP sink.

The API and the worker as the functions wire them: queues managed through
/v1/queues, sends routed through them onto three SQS priority bands, and the
worker's claim gate holding paused mail and deferring mail over a send rate.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import boto3
import pytest
from sqlalchemy import text

from devstack.aws import ProvisionedQueue
from devstack.lambda_runtime import LocalFunction
from devstack.sqs_poller import PriorityPoller, QueuePoller
from devstack.template import load_stack
from mailroom.adapters.claim_limits import RedisClaimRateLimiter
from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.providers.smtp import SmtpProvider
from mailroom.adapters.queue import QueueEntry, SqsMessageQueue
from mailroom.adapters.redis_store import RedisStore
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.queues import Band
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.queues import queue_routes
from mailroom.entrypoints.scheduler import run_scheduler
from mailroom.entrypoints.schedules import schedule_sender
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services import delivery, queues
from mailroom.services.clients import RegisteredClient, register_client
from mailroom.services.queues import ClaimGate
from mailroom.services.scheduler import SchedulerPolicy, scheduler_pass
from tests.events import FakeLambdaContext, load_event, request_event
from tests.integration.conftest import SmtpSink, free_port, running_sink, sqs_event
from tests.integration.test_pipeline import TEMPLATES, database_url_of

pytestmark = pytest.mark.integration

WELCOME = load_event("send/send-welcome")


def make_queue(sqs: Any, name: str) -> str:
    return str(sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"])


class Stack:
    def __init__(self, database_url: str, redis_url: str, smtp_port: int, **extra: Any) -> None:
        self.sqs = boto3.client("sqs", region_name="us-east-1")
        suffix = uuid.uuid4().hex[:8]
        self.urls = {
            band: make_queue(self.sqs, f"mailroom-{band}-{suffix}")
            for band in ("high", "normal", "low")
        }
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            queue_url=self.urls["normal"],
            high_priority_queue_url=self.urls["high"],
            low_priority_queue_url=self.urls["low"],
            templates_dir=TEMPLATES,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            max_send_attempts=2,
            **extra,
        )
        self.services: Services = bootstrap(self.settings)
        self.client: RegisteredClient = register_client(
            self.services.uow(), self.services.hasher, name=f"acme-{suffix}"
        )
        provider = lambda: self.services  # noqa: E731 - the routes take a provider
        self.api = create_api(
            [send_routes(provider), status_routes(provider), queue_routes(provider)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        path, _, query = path.partition("?")
        event = request_event(
            method,
            path,
            query=dict(parse_qsl(query)) or None,
            body=body,
            X_Api_Key=self.client.api_key,
            X_Api_Secret=self.client.api_secret,
        )
        answer = self.api.resolve(event, FakeLambdaContext())
        return answer["statusCode"], json.loads(answer["body"])

    def send(self, **fields: Any) -> tuple[int, dict[str, Any]]:
        body = {**json.loads(WELCOME["body"]), **fields}
        return self.call("POST", "/v1/send", body)

    def create(self, name: str, **fields: Any) -> dict[str, Any]:
        status, body = self.call("POST", "/v1/queues", {"name": name, **fields})
        assert status == 201, body
        return body

    def depth(self, band: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.urls[band],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    def work(self, band: str) -> tuple[dict[str, Any], int]:
        """One worker invocation on what ``band`` holds; its answer and the records it took."""
        received = self.sqs.receive_message(
            QueueUrl=self.urls[band],
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            return {"batchItemFailures": []}, 0
        arn = self.sqs.get_queue_attributes(QueueUrl=self.urls[band], AttributeNames=["QueueArn"])
        event = sqs_event(received, arn["Attributes"]["QueueArn"])
        answer = process_send_batch(event, FakeLambdaContext("mailroom-worker"), self.services)
        failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
        done = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(received)
            if m["MessageId"] not in failed
        ]
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.urls[band], Entries=done)
        return answer, len(received)

    def status_of(self, message_id: str) -> str:
        status, body = self.call("GET", f"/v1/messages/{message_id}")
        assert status == 200, body
        return str(body["status"])


@pytest.fixture
def stack(database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(database_url_of(database), redis_url, smtp_sink.port)


def test_create_list_get_update_delete_and_bad_input(stack: Stack) -> None:
    # GIVEN a client that creates a newsletter queue
    created = stack.create("newsletter", priority=2, rate_limit_per_minute=600, bulk=True)
    assert uuid.UUID(created["id"])
    assert created["band"] == "low"
    assert created["retry_delays"] is None
    # WHEN it asks for bad things THEN each is a 4xx with a code, nothing written
    assert stack.call("POST", "/v1/queues", {"name": "newsletter"})[1]["error"]["code"] == (
        "queue_name_taken"
    )
    for bad in (
        {"name": "x1", "priority": 11},
        {"name": "x2", "priority": 0},
        {"name": "x3", "retry_delays": [120, 30]},
        {"name": "x4", "retry_delays": [30, 30]},
        {"name": "x5", "retry_delays": [30, 43_201]},
        {"name": "x6", "retry_delays": []},
        {"name": "x7", "max_retries": 7},
        {"name": "Bad Name"},
    ):
        status, body = stack.call("POST", "/v1/queues", bad)
        assert status == 422, (bad, body)
    status, page = stack.call("GET", "/v1/queues?limit=1")
    assert status == 200
    assert [q["name"] for q in page["queues"]] == ["newsletter"]
    assert page["next_cursor"] is None
    stack.create("transactional", priority=9)
    status, page = stack.call("GET", "/v1/queues?limit=1")
    assert page["next_cursor"] == "newsletter"
    status, rest = stack.call("GET", f"/v1/queues?limit=1&cursor={page['next_cursor']}")
    assert [q["name"] for q in rest["queues"]] == ["transactional"]
    # updates, with the same checks
    status, changed = stack.call("PATCH", f"/v1/queues/{created['id']}", {"priority": 8})
    assert (status, changed["band"]) == (200, "high")
    status, body = stack.call("PATCH", f"/v1/queues/{created['id']}", {"name": "transactional"})
    assert (status, body["error"]["code"]) == (409, "queue_name_taken")
    status, body = stack.call("PATCH", f"/v1/queues/{created['id']}", {"retry_delays": [5, 1]})
    assert status == 422
    assert stack.call("GET", f"/v1/queues/{uuid.uuid4()}")[0] == 404
    assert stack.call("GET", "/v1/queues/not-a-uuid")[0] == 404
    # an empty queue deletes at once
    status, deleted = stack.call("DELETE", f"/v1/queues/{created['id']}")
    assert (status, deleted) == (200, {"deleted": True, "unsent": 0})


def test_a_send_names_its_queue_and_travels_on_its_band(stack: Stack) -> None:
    # GIVEN a high-priority queue
    stack.create("transactional", priority=10)
    # WHEN one send names it and one names none, and one names an unknown queue
    status, named = stack.send(queue="transactional")
    assert status == 202, named
    status, default = stack.send()
    assert status == 202, default
    status, unknown = stack.send(queue="nope")
    # THEN the named one is on the high band, the other on the default (normal) band
    assert stack.depth("high") == 1
    assert stack.depth("normal") == 1
    assert (status, unknown["error"]["code"]) == (422, "unknown_queue")
    # and the client's default queue was made on first use
    names = [q["name"] for q in stack.call("GET", "/v1/queues")[1]["queues"]]
    assert names == ["default", "transactional"]


def test_pause_holds_new_and_queued_mail_and_resume_sends_it_in_order(
    stack: Stack, smtp_sink: SmtpSink, database: Database
) -> None:
    queue = stack.create("news", priority=5)
    # GIVEN two messages already on SQS when the queue is paused
    early = [stack.send(queue="news")[1]["id"] for _ in range(2)]
    status, paused = stack.call("POST", f"/v1/queues/{queue['id']}/pause")
    assert (status, paused["queue"]["state"]) == (200, "paused")
    # WHEN a new send names it
    status, late = stack.send(queue="news")
    # THEN it is accepted as held, and not put on SQS
    assert (status, late["status"]) == (202, "held")
    assert stack.depth("normal") == 2
    # WHEN the worker meets the two queued before the pause
    answer, taken = stack.work("normal")
    # THEN they are held, acknowledged, not sent and not counted as attempts
    assert (taken, answer) == (2, {"batchItemFailures": []})
    assert smtp_sink.received == []
    assert [stack.status_of(i) for i in early] == ["held", "held"]
    with database.engine.connect() as connection:
        attempts = connection.execute(
            text("SELECT sum(attempts) FROM messages WHERE status = 'held'")
        ).scalar_one()
    assert attempts == 0
    status, stats = stack.call("GET", f"/v1/queues/{queue['id']}/stats")
    assert stats["depth"] == {"held": 3}
    assert stats["oldest_message_age_seconds"] >= 0
    # WHEN the queue is resumed
    status, resumed = stack.call("POST", f"/v1/queues/{queue['id']}/resume")
    assert (status, resumed["released"], resumed["releasing"]) == (200, 3, False)
    # THEN all three are sent, oldest first, nothing lost
    answer, taken = stack.work("normal")
    assert (taken, answer) == (3, {"batchItemFailures": []})
    assert len(smtp_sink.received) == 3
    assert [stack.status_of(i) for i in [*early, late["id"]]] == ["sent"] * 3
    with database.engine.connect() as connection:
        order = connection.execute(
            text("SELECT id::text FROM messages WHERE queue_id = :q ORDER BY sent_at"),
            {"q": queue["id"]},
        ).scalars()
        assert list(order) == [*early, late["id"]]
    status, stats = stack.call("GET", f"/v1/queues/{queue['id']}/stats")
    assert stats["depth"] == {}
    assert (stats["sent_last_hour"], stats["current_rate_per_minute"]) == (3, 3)


def test_drain_sends_what_is_queued_and_refuses_new_mail(stack: Stack, smtp_sink: SmtpSink) -> None:
    queue = stack.create("old")
    status, queued = stack.send(queue="old")
    # WHEN the queue drains
    status, drained = stack.call("POST", f"/v1/queues/{queue['id']}/drain")
    assert drained["queue"]["state"] == "draining"
    # THEN new mail is refused, what it holds is still sent
    status, refused = stack.send(queue="old")
    assert (status, refused["error"]["code"]) == (409, "queue_draining")
    stack.work("normal")
    assert stack.status_of(queued["id"]) == "sent"
    assert len(smtp_sink.received) == 1


def test_delete_refuses_unsent_mail_unless_drained(stack: Stack, smtp_sink: SmtpSink) -> None:
    queue = stack.create("bulk", priority=2)
    stack.call("POST", f"/v1/queues/{queue['id']}/pause")
    status, held = stack.send(queue="bulk")
    assert held["status"] == "held"
    status, body = stack.call("DELETE", f"/v1/queues/{queue['id']}")
    assert (status, body["error"]["code"]) == (409, "queue_not_empty")
    status, body = stack.call("DELETE", f"/v1/queues/{queue['id']}?drain=true")
    assert (status, body) == (200, {"deleted": True, "unsent": 1})
    # the held message was released onto its band and is still sent
    stack.work("low")
    assert stack.status_of(held["id"]) == "sent"
    assert stack.send(queue="bulk")[1]["error"]["code"] == "unknown_queue"


REPO = TEMPLATES.parent
BAND_OF_QUEUE = {
    "HighPrioritySendQueue": "high",
    "SendQueue": "normal",
    "LowPrioritySendQueue": "low",
}


def band_pollers(stack: Stack) -> PriorityPoller:
    """The local runner's loop over the worker's bands, as template.yaml declares them."""
    spec = next(
        f
        for f in load_stack(REPO / "template.yaml", stack_name="t", region="us-east-1").functions
        if f.logical_id == "WorkerFunction"
    )
    worker = LocalFunction(
        spec,
        lambda event, context: process_send_batch(event, context, stack.services),
        region="us-east-1",
        lock=threading.Lock(),
    )
    pollers = []
    for trigger in sorted(spec.sqs_triggers, key=lambda t: -(t.maximum_concurrency or 0)):
        url = stack.urls[BAND_OF_QUEUE[trigger.queue]]
        arn = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        queue = ProvisionedQueue(
            trigger.queue, url.rsplit("/", 1)[1], url, arn["Attributes"]["QueueArn"], 30
        )
        pollers.append(QueuePoller(stack.sqs, queue, trigger, worker, region="us-east-1"))
    return PriorityPoller(pollers)


def test_a_priority_ten_message_overtakes_a_low_priority_backlog(
    stack: Stack, database: Database
) -> None:
    # GIVEN a backlog of 40 messages on a priority-1 queue
    stack.create("newsletter", priority=1)
    stack.create("transactional", priority=10)
    backlog = [stack.send(queue="newsletter")[1]["id"] for _ in range(40)]
    # WHEN a priority-10 message arrives after all of them, and the runner's loop works
    status, urgent = stack.send(queue="transactional")
    assert status == 202
    loop = band_pollers(stack)
    for _ in range(6):
        loop._round()
    # THEN the urgent one went out first, and the backlog keeps flowing after it
    with database.engine.connect() as connection:
        sent = connection.execute(
            text("SELECT id::text FROM messages WHERE status = 'sent' ORDER BY sent_at")
        ).scalars()
        order = list(sent)
    assert order[0] == urgent["id"]
    assert len(order) > 10
    assert set(order[1:]) <= set(backlog)


def test_template_bands_weight_concurrency_toward_high() -> None:
    spec = next(
        f
        for f in load_stack(REPO / "template.yaml", stack_name="t", region="us-east-1").functions
        if f.logical_id == "WorkerFunction"
    )
    concurrency = {t.queue: t.maximum_concurrency for t in spec.sqs_triggers}
    assert concurrency == {"HighPrioritySendQueue": 10, "SendQueue": 5, "LowPrioritySendQueue": 2}


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_queue_rate_limit_holds_over_a_minute_and_defers_without_attempts(
    database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN a queue limited to 12 sends a minute, 30 messages in it, and a
    # claim gate on an injected clock
    clock = Clock()
    stack = Stack(database_url_of(database), redis_url, smtp_sink.port)
    gate = ClaimGate(RedisClaimRateLimiter(RedisStore(redis_url), clock=clock))
    stack.create("slow", rate_limit_per_minute=12)
    ids = [uuid.UUID(stack.send(queue="slow")[1]["id"]) for _ in range(30)]
    sent_by_second: dict[int, int] = {}
    delays: list[int] = []
    # WHEN the worker is offered every unsent message every 5 s for a minute
    for second in range(0, 61, 5):
        clock.now = 1_900_000_000.0 + second
        outcomes = delivery.deliver_batch(
            stack.services.uow(),
            stack.services.templates,
            stack.services.renderer,
            stack.services.providers,
            items=[delivery.SendItem(i) for i in ids],
            max_attempts=3,
            gate=gate,
        )
        sent_by_second[second] = sum(o.result is delivery.DeliveryResult.SENT for o in outcomes)
        delays += [
            o.retry_after_seconds or 0
            for o in outcomes
            if o.result is delivery.DeliveryResult.DEFERRED
        ]
    # THEN the bucket's 12 went at once, then one every 5 s: 24 in the minute
    assert sent_by_second[0] == 12
    assert all(sent_by_second[s] == 1 for s in range(5, 61, 5))
    assert len(smtp_sink.received) == 24
    # the rest were deferred with a delay from the bucket, never below 1 s
    assert min(delays) >= 1
    assert max(delays) <= 900
    # nothing was lost and no deferral counted as an attempt
    statuses = [stack.status_of(str(i)) for i in ids]
    assert statuses.count("sent") == 24
    assert statuses.count("queued") == 6
    with database.engine.connect() as connection:
        attempts = connection.execute(
            text("SELECT max(attempts) FROM messages WHERE status = 'queued'")
        ).scalar_one()
    assert attempts == 0


def test_the_worker_puts_a_deferred_record_back_delayed_and_acknowledges_it(
    stack: Stack, smtp_sink: SmtpSink, database: Database
) -> None:
    # GIVEN a queue of 1 send a minute holding 3 messages
    stack.create("trickle", rate_limit_per_minute=1)
    for _ in range(3):
        stack.send(queue="trickle")
    # WHEN the worker takes the batch
    answer, taken = stack.work("normal")
    # THEN one is sent, the other two acknowledged and back on the band, delayed
    assert (taken, answer) == (3, {"batchItemFailures": []})
    assert len(smtp_sink.received) == 1
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=stack.urls["normal"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessagesDelayed"]) == 2
    assert stack.depth("normal") == 0
    # and the rows say when they are due, so the reconciler does not take them for lost
    with database.engine.connect() as connection:
        due = connection.execute(
            text(
                "SELECT count(*) FROM messages WHERE status = 'queued' "
                "AND next_attempt_at > now() + interval '10 seconds'"
            )
        ).scalar_one()
    assert due == 2


def test_a_queue_retry_schedule_replaces_the_service_backoff(
    database: Database, redis_url: str, aws: str
) -> None:
    # GIVEN an SMTP server that is not there, a queue that never retries and
    # one that retries after 7 s
    stack = Stack(database_url_of(database), redis_url, free_port(), retry_jitter=0)
    stack.create("once", max_retries=0)
    stack.create("patient", max_retries=2, retry_delays=[7, 20])
    status, once = stack.send(queue="once")
    status, patient = stack.send(queue="patient")
    # WHEN the worker tries both
    stack.work("normal")
    # THEN the first failed at its first attempt, the second waits its own 7 s
    assert stack.status_of(once["id"]) == "failed"
    status, view = stack.call("GET", f"/v1/messages/{patient['id']}")
    assert (status, view["status"]) == (200, "queued")
    (retry,) = [e for e in view["events"] if e["type"] == "attempt_failed"]
    assert retry["detail"]["retry_in_seconds"] == 7


def test_a_client_at_its_in_flight_cap_is_deferred_not_sent(
    database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN a cap of 2 in-flight messages per client, one of them claimed by a live worker
    stack = Stack(database_url_of(database), redis_url, smtp_sink.port, client_max_in_flight=2)
    ids = [stack.send()[1]["id"] for _ in range(4)]
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE messages SET status = 'sending', "
                "lease_expires_at = now() + interval '1 minute' WHERE id = :id"
            ),
            {"id": ids[0]},
        )
    # WHEN the worker takes the batch (the claimed one's record included)
    stack.work("normal")
    # THEN one more is sent (2 in flight at most), the other two wait, unharmed
    assert len(smtp_sink.received) == 1
    statuses = sorted(stack.status_of(i) for i in ids[1:])
    assert statuses == ["queued", "queued", "sent"]


def test_a_batch_routes_each_item_through_its_queue(stack: Stack) -> None:
    # GIVEN a paused queue and a high-priority one
    paused = stack.create("later")
    stack.call("POST", f"/v1/queues/{paused['id']}/pause")
    stack.create("now", priority=9)
    item = json.loads(WELCOME["body"])
    # WHEN a batch sends one item to each
    status, answer = stack.call(
        "POST", "/v1/send/batch", [{**item, "queue": "later"}, {**item, "queue": "now"}]
    )
    # THEN the first is held, the second is on the high band
    assert status == 200, answer
    held, sent = answer["data"]
    assert stack.status_of(held["id"]) == "held"
    assert stack.status_of(sent["id"]) == "queued"
    assert (stack.depth("high"), stack.depth("normal")) == (1, 0)
    # and a batch naming an unknown queue is refused whole, nothing written
    status, refused = stack.call("POST", "/v1/send/batch", [item, {**item, "queue": "nope"}])
    assert (status, refused["error"]["code"]) == (422, "unknown_queue")
    assert stack.depth("normal") == 0


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def waiting(stack: Stack, band: str) -> int:
    """Records on ``band``, visible or still in their SQS delay."""
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=stack.urls[band],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesDelayed"]
    )


def test_the_scheduler_releases_scheduled_mail_onto_its_queues_band(stack: Stack) -> None:
    # GIVEN a priority-9 and a priority-2 queue, each with a message due in an
    # hour, a default-queue one due then too, and one of the priority-9 due
    # within the scheduler's look-ahead (released at acceptance)
    stack.create("urgent", priority=9)
    stack.create("later", priority=2)
    now = datetime.now(UTC).replace(microsecond=0)
    in_an_hour = (now + timedelta(hours=1)).isoformat()
    ids = {
        name: stack.send(queue=name, scheduled_at=in_an_hour)[1]["id"]
        for name in ("urgent", "later", "default")
    }
    status, soon = stack.send(
        queue="urgent", scheduled_at=(now + timedelta(seconds=30)).isoformat()
    )
    assert status == 202, soon
    assert [waiting(stack, band) for band in ("high", "normal", "low")] == [1, 0, 0]
    # WHEN the scheduler runs an hour later
    report = scheduler_pass(
        stack.services.uow(),
        stack.services.queue,
        schedule_sender(stack.services),
        # (the one released at acceptance is not taken for lost meanwhile)
        policy=SchedulerPolicy(stale_seconds=7200),
        clock=FixedClock(now + timedelta(hours=1)),
    )
    # THEN each went onto its own queue's band, not all onto the normal one
    assert report.enqueued == 3
    assert [waiting(stack, band) for band in ("high", "normal", "low")] == [2, 1, 1]
    assert all(stack.status_of(i) == "scheduled" for i in ids.values())


def hold_copies(database: Database, seed: str, count: int) -> None:
    """``count`` more held rows like ``seed``, each a millisecond younger than the one before."""
    with database.engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO messages
                SELECT (jsonb_populate_record(m, jsonb_build_object(
                    'id', gen_random_uuid(),
                    'trace_id', md5(n::text),
                    'created_at', m.created_at + n * interval '1 millisecond'))).*
                FROM messages m, generate_series(1, :count) AS n
                WHERE m.id = :seed
                """
            ),
            {"seed": seed, "count": count},
        )


class RecordingBands(SqsMessageQueue):
    """The real SQS bands, remembering what each enqueue_many call put on which band.

    (Receiving thousands of records back from moto takes minutes; the
    recording says the same: which ids, in which call, on which band.)
    """

    def __init__(self, stack: Stack) -> None:
        super().__init__(
            stack.urls["normal"],
            "us-east-1",
            {Band.HIGH: stack.urls["high"], Band.LOW: stack.urls["low"]},
            # One SendMessageBatch at a time: moto shares this process's GIL,
            # and eight at once on a loaded machine outlast boto3's timeout.
            parallel_batches=1,
        )
        self.calls: list[list[QueueEntry]] = []

    def enqueue_many(self, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        self.calls.append(list(entries))
        return super().enqueue_many(entries)

    def taken(self) -> list[str]:
        """The ids enqueued since the last call, each call's in its order; all on the high band."""
        calls, self.calls = self.calls, []
        assert all(entry.band is Band.HIGH for call in calls for entry in call)
        return [str(entry.message_id) for call in calls for entry in call]


def held_in_order(database: Database, queue_id: str) -> list[str]:
    with database.engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT id::text FROM messages WHERE queue_id = :q AND status = 'held' "
                    "ORDER BY created_at, id"
                ),
                {"q": queue_id},
            ).scalars()
        )


def test_resuming_a_thousand_held_messages_releases_a_page_then_the_rest_in_passes(
    database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN a paused priority-9 queue holding 1,000 messages, pages of 100 (moto in this
    # process makes more take minutes)
    stack = Stack(database_url_of(database), redis_url, smtp_sink.port, queue_release_page_size=100)
    bands = RecordingBands(stack)
    stack.services = bootstrap(stack.settings, queue=bands)
    queue = stack.create("backlog", priority=9)
    stack.call("POST", f"/v1/queues/{queue['id']}/pause")
    seed = stack.send(queue="backlog")[1]["id"]
    hold_copies(database, seed, 999)
    oldest_first = held_in_order(database, queue["id"])
    assert len(oldest_first) == 1000
    # WHEN it is resumed
    status, resumed = stack.call("POST", f"/v1/queues/{queue['id']}/resume")
    # THEN the answer comes after one page: the oldest 100, in order, on the high band
    assert (status, resumed["released"], resumed["releasing"]) == (200, 100, True)
    assert resumed["queue"]["state"] == "active"
    assert bands.taken() == oldest_first[:100]
    # WHEN a release pass runs with a budget (an injected clock) for four pages
    report = queues.release_requested(
        stack.services.uow(),
        stack.services.queue,
        page_size=100,
        deadline=4,
        clock=iter(range(100)).__next__,
    )
    # THEN it stops there, and the pages it released are the next oldest, in order
    assert (report.pages, report.released, report.budget_exhausted) == (4, 400, True)
    assert bands.taken() == oldest_first[100:500]
    # WHEN the scheduler function runs (its pass, then the held mail's
    # release: at least one page), then a pass without a deadline
    answer = run_scheduler({}, FakeLambdaContext("mailroom-scheduler"), stack.services)
    assert answer["held_released"] >= 100
    report = queues.release_requested(
        stack.services.uow(), stack.services.queue, page_size=100, deadline=float("inf")
    )
    # THEN the rest is released in order, each row exactly once, and the mark is gone
    assert answer["held_released"] + report.released == 500
    assert bands.taken() == oldest_first[500:]
    assert held_in_order(database, queue["id"]) == []
    assert stack.depth("high") >= 1000
    with database.engine.connect() as connection:
        marked, released_events = connection.execute(
            text(
                "SELECT (SELECT count(*) FROM queues WHERE release_requested_at IS NOT NULL), "
                "(SELECT count(*) FROM message_events WHERE type = 'released')"
            )
        ).one()
    assert (marked, released_events) == (0, 1000)


class CrashAfterSending(SqsMessageQueue):
    """The real SQS queue; the process dies after the n-th page reached SQS, before its commit."""

    def __init__(self, stack: Stack, crash_on_call: int) -> None:
        super().__init__(
            stack.urls["normal"],
            "us-east-1",
            {Band.HIGH: stack.urls["high"], Band.LOW: stack.urls["low"]},
        )
        self.calls = 0
        self.crash_on_call = crash_on_call

    def enqueue_many(self, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        refused = super().enqueue_many(entries)
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise SystemExit("killed between SQS and the commit")
        return refused


def test_a_release_killed_mid_way_loses_nothing_and_sends_nothing_twice(
    stack: Stack, smtp_sink: SmtpSink, database: Database
) -> None:
    # GIVEN a paused queue holding 50 messages, released 20 a page
    queue = stack.create("crashy")
    stack.call("POST", f"/v1/queues/{queue['id']}/pause")
    ids = [stack.send(queue="crashy")[1]["id"] for _ in range(50)]
    with database.engine.begin() as connection:
        connection.execute(
            text("UPDATE queues SET state = 'active', release_requested_at = now() WHERE id = :q"),
            {"q": queue["id"]},
        )
    # WHEN a release is killed after its second page reached SQS, before it committed
    crashing = CrashAfterSending(stack, crash_on_call=2)
    with pytest.raises(SystemExit):
        queues.release_requested(
            stack.services.uow(), crashing, page_size=20, deadline=float("inf")
        )
    # THEN the first page is queued, the second still held though its records are out
    statuses = [stack.status_of(i) for i in ids]
    assert statuses == ["queued"] * 20 + ["held"] * 30
    # WHEN the worker meets those records, and a later pass releases the rest
    while stack.work("normal")[1]:
        pass
    assert len(smtp_sink.received) == 20
    report = queues.release_requested(
        stack.services.uow(), stack.services.queue, page_size=20, deadline=float("inf")
    )
    assert report.released == 30
    while stack.work("normal")[1]:
        pass
    # THEN every message was sent, and none twice
    assert [stack.status_of(i) for i in ids] == ["sent"] * 50
    assert len(smtp_sink.received) == 50


def groups_on(stack: Stack, band: str) -> list[str | None]:
    received = stack.sqs.receive_message(
        QueueUrl=stack.urls[band],
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["MessageGroupId"],
    ).get("Messages", [])
    return [m.get("Attributes", {}).get("MessageGroupId") for m in received]


def test_send_records_carry_the_client_as_their_fair_queue_group(
    database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN the default settings (SQS fair queues on) and a high-priority queue
    stack = Stack(database_url_of(database), redis_url, smtp_sink.port)
    stack.create("urgent", priority=10)
    item = json.loads(WELCOME["body"])
    # WHEN a send, a batch and a released held message go onto the bands
    stack.send(queue="urgent")
    stack.call("POST", "/v1/send/batch", [item, item])
    paused = stack.create("later", priority=2)
    stack.call("POST", f"/v1/queues/{paused['id']}/pause")
    stack.send(queue="later")
    stack.call("POST", f"/v1/queues/{paused['id']}/resume")
    # THEN every record's MessageGroupId is the client's id (standard queues
    # take it: moto as AWS since fair queues)
    client = str(stack.client.client.id)
    assert groups_on(stack, "high") == [client]
    assert groups_on(stack, "normal") == [client, client]
    assert groups_on(stack, "low") == [client]


def test_fair_queue_groups_can_be_turned_off(
    database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN SQS_FAIR_QUEUES=false (an emulator that refuses MessageGroupId)
    stack = Stack(database_url_of(database), redis_url, smtp_sink.port, sqs_fair_queues=False)
    # WHEN a message is sent
    stack.send()
    # THEN its record has no group
    assert groups_on(stack, "normal") == [None]


ADMIN_TOKEN = "queues-test-admin-token-0123456789abcdef"


def test_the_admin_dlq_routes_read_and_redrive_each_bands_dlq(
    database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN a DLQ per priority band, and a priority-10 message whose record
    # SQS moved to the high band's DLQ (its workers kept dying on it)
    sqs = boto3.client("sqs", region_name="us-east-1")
    suffix = uuid.uuid4().hex[:8]
    dlqs = {band: make_queue(sqs, f"mailroom-{band}-dlq-{suffix}") for band in BAND_NAMES}
    stack = Stack(
        database_url_of(database),
        redis_url,
        smtp_sink.port,
        admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        dead_letter_queue_url=dlqs["normal"],
        high_priority_dead_letter_queue_url=dlqs["high"],
        low_priority_dead_letter_queue_url=dlqs["low"],
    )
    stack.create("urgent", priority=10)
    message_id = stack.send(queue="urgent")[1]["id"]
    (record,) = sqs.receive_message(QueueUrl=stack.urls["high"], MaxNumberOfMessages=10)["Messages"]
    sqs.send_message(QueueUrl=dlqs["high"], MessageBody=record["Body"])
    sqs.delete_message(QueueUrl=stack.urls["high"], ReceiptHandle=record["ReceiptHandle"])
    api = create_api(admin_routes(lambda: stack.services), max_request_bytes=lambda: 65536)

    def admin(method: str, path: str, **query: str) -> tuple[int, Any]:
        event = request_event(
            method, path, query=query or None, Authorization=f"Bearer {ADMIN_TOKEN}"
        )
        answer = api.resolve(event, FakeLambdaContext())
        return answer["statusCode"], json.loads(answer["body"])

    # WHEN an operator lists the DLQs
    status, normal = admin("GET", "/admin/dlq")
    status_high, high = admin("GET", "/admin/dlq", band="high")
    # THEN the default listing (normal) is empty but says where the record is
    assert (status, normal["band"], normal["messages"]) == (200, "normal", [])
    assert normal["bands"] == {"high": 1, "normal": 0, "low": 0}
    # and the high band's listing shows it, with its row's status
    assert (status_high, high["band"], high["queue"]) == (
        200,
        "high",
        f"mailroom-high-dlq-{suffix}",
    )
    assert [(m["message_id"], m["status"]) for m in high["messages"]] == [(message_id, "queued")]
    # WHEN it is redriven from the high band's DLQ
    status, report = admin("POST", f"/admin/dlq/{message_id}/redrive", band="high")
    # THEN it is back on the high band, and the DLQ is empty
    assert (status, report["redriven"]) == (200, [message_id])
    assert stack.depth("high") == 1
    assert admin("GET", "/admin/dlq", band="high")[1]["bands"]["high"] == 0
    # and a band that is not one is refused
    status, refused = admin("GET", "/admin/dlq", band="urgent")
    assert status == 422, refused


BAND_NAMES = ("high", "normal", "low")


def test_a_queues_provider_order_replaces_the_clients(
    database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN two providers, "smtp" first by the service's order, and a queue
    # that tries the other first (provider names are a fixed set: a second
    # real SMTP server plays "sendgrid")
    with running_sink() as backup:
        stack = Stack(
            database_url_of(database), redis_url, smtp_sink.port, provider_order="smtp,sendgrid"
        )
        stack.services = bootstrap(
            stack.settings,
            providers={
                "smtp": SmtpProvider(smtp_sink.host, smtp_sink.port, timeout_seconds=2),
                "sendgrid": SmtpProvider(backup.host, backup.port, timeout_seconds=2),
            },
        )
        queue = stack.create("via-backup", provider_order=["sendgrid", "smtp"])
        assert queue["provider_order"] == ["sendgrid", "smtp"]
        # WHEN one message goes through it and one through the default queue
        stack.send(queue="via-backup")
        stack.send()
        stack.work("normal")
        # THEN the queue's went to the second server, the other to "smtp"
        assert (len(backup.received), len(smtp_sink.received)) == (1, 1)
        # AND an order naming a provider that is not configured is refused
        status, refused = stack.call(
            "POST", "/v1/queues", {"name": "x", "provider_order": ["nope"]}
        )
        assert (status, refused["error"]["code"]) == (422, "validation_error")
        status, refused = stack.call(
            "PATCH", f"/v1/queues/{queue['id']}", {"provider_order": ["smtp", "smtp"]}
        )
        assert (status, refused["error"]["code"]) == (422, "validation_error")


class PauseAfterTheRead(ClaimGate):
    """The gate, with a pause committed by another session right after its read."""

    def __init__(self, database: Database, queue_id: str) -> None:
        super().__init__(None)
        self._database = database
        self._queue_id = queue_id

    def admit(self, uow: Any, message_ids: Sequence[uuid.UUID]) -> queues.Admission:
        admission = super().admit(uow, message_ids)
        with self._database.engine.begin() as connection:
            connection.execute(
                text("UPDATE queues SET state = 'paused' WHERE id = :q"), {"q": self._queue_id}
            )
        return admission


def test_a_pause_between_the_gates_read_and_the_claim_holds_the_batch(
    stack: Stack, smtp_sink: SmtpSink, database: Database
) -> None:
    # GIVEN three messages of an active queue, and one of the default queue
    queue = stack.create("racy")
    ids = [uuid.UUID(stack.send(queue="racy")[1]["id"]) for _ in range(3)]
    other = uuid.UUID(stack.send()[1]["id"])
    # WHEN the queue is paused after the gate read it active, before the claim
    outcomes = delivery.deliver_batch(
        stack.services.uow(),
        stack.services.templates,
        stack.services.renderer,
        stack.services.providers,
        items=[delivery.SendItem(i) for i in [*ids, other]],
        max_attempts=3,
        gate=PauseAfterTheRead(database, queue["id"]),
    )
    # THEN none of the queue's is sent: they are held, to go out on resume
    results = {o.message_id: o.result for o in outcomes}
    assert [results[i] for i in ids] == [delivery.DeliveryResult.HELD] * 3
    assert [stack.status_of(str(i)) for i in ids] == ["held"] * 3
    # and the other queue's message is sent as usual
    assert results[other] is delivery.DeliveryResult.SENT
    assert len(smtp_sink.received) == 1
    status, resumed = stack.call("POST", f"/v1/queues/{queue['id']}/resume")
    assert (status, resumed["released"]) == (200, 3)


@pytest.mark.parametrize("named", [True, False])
def test_held_mail_a_resume_could_not_see_is_released_by_the_next_pass(
    stack: Stack, database: Database, named: bool
) -> None:
    # GIVEN a paused queue (a named one, or the client's default) holding one message
    if named:
        queue_id = stack.create("news", priority=5)["id"]
    else:
        with stack.services.uow() as uow:  # the default queue is made on first use
            queue_id = str(uow.queues.default_of(stack.client.client.id).id)
            uow.commit()
    stack.call("POST", f"/v1/queues/{queue_id}/pause")
    status, held = stack.send(queue="news") if named else stack.send()
    assert (status, held["status"]) == (202, "held")
    assert stack.depth("normal") == 0
    # ...and what a send that read the queue paused and committed only after a
    # resume's release had looked leaves behind: the queue active, the message
    # held, no release mark
    with database.engine.begin() as connection:
        connection.execute(
            text("UPDATE queues SET state = 'active', release_requested_at = NULL WHERE id = :q"),
            {"q": queue_id},
        )
    # WHEN the scheduler's release step runs
    report = queues.release_requested(
        stack.services.uow(), stack.services.queue, page_size=100, deadline=float("inf")
    )
    # THEN the message is released onto SQS, and the queue's mark is gone again
    assert report.released == 1
    assert stack.status_of(held["id"]) == "queued"
    assert stack.depth("normal") == 1
    with database.engine.connect() as connection:
        marked = connection.execute(
            text("SELECT count(*) FROM queues WHERE release_requested_at IS NOT NULL")
        ).scalar_one()
    assert marked == 0
