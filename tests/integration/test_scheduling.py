"""Scheduling on real parts (issue 18): PostgreSQL, SQS (moto), Redis and an SMTP server.

Time is a clock the tests move; nothing sleeps for minutes. Where the worker
must find a message due, its time is a second or two ahead of the real one
(the worker's claim reads PostgreSQL's clock).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.queue import QueueEntry, SqsMessageQueue
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.errors import NotScheduled
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.scheduler import policy_of, run_scheduler
from mailroom.entrypoints.schedules import (
    message_schedule_routes,
    schedule_routes,
    schedule_sender,
)
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services import schedules
from mailroom.services.clients import RegisteredClient, register_client
from mailroom.services.delivery import DeliveryResult, deliver_message
from mailroom.services.scheduler import SchedulerPolicy, scheduler_pass
from tests.events import FakeLambdaContext, request_event
from tests.integration.conftest import SmtpSink, sqs_event
from tests.integration.test_pipeline import database_url_of

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
WELCOME = json.loads(
    (Path(__file__).resolve().parents[2] / "events/send/send-welcome.json").read_text()
)
WELCOME_BODY: dict[str, Any] = json.loads(WELCOME["body"])


class MovableClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment

    def move(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


class RecordingSqsQueue(SqsMessageQueue):
    """The real SQS queue, remembering what it was asked to enqueue (and with which delay)."""

    def __init__(self, queue_url: str) -> None:
        super().__init__(queue_url, "us-east-1")
        self.entries: list[QueueEntry] = []
        self._lock = threading.Lock()

    def enqueue_many(self, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        with self._lock:
            self.entries.extend(entries)
        return super().enqueue_many(entries)


class Stack:
    def __init__(
        self, database_url: str, redis_url: str, queue_url: str, smtp_port: int, templates: Path
    ) -> None:
        self.queue_url = queue_url
        self.templates = templates
        self.clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            queue_url=queue_url,
            templates_dir=templates,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
        )
        self.queue = RecordingSqsQueue(queue_url)
        self.services: Services = bootstrap(self.settings, queue=self.queue, clock=self.clock)
        self.client: RegisteredClient = register_client(
            self.services.uow(), self.services.hasher, name=f"acme-{uuid.uuid4().hex[:6]}"
        )
        self.api = create_api(
            [
                send_routes(lambda: self.services),
                status_routes(lambda: self.services),
                schedule_routes(lambda: self.services),
                message_schedule_routes(lambda: self.services),
            ],
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )
        self.sqs = boto3.client("sqs", region_name="us-east-1")

    def call(
        self, method: str, path: str, body: Any = None, **query: str
    ) -> tuple[int, dict[str, Any]]:
        event = request_event(
            method,
            path,
            query=query or None,
            body=body,
            X_Api_Key=self.client.api_key,
            X_Api_Secret=self.client.api_secret,
        )
        event["headers"]["Content-Type"] = "application/json"
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"] or "null")

    def send(self, **fields: Any) -> tuple[int, dict[str, Any]]:
        return self.call("POST", "/v1/send", {**WELCOME_BODY, **fields})

    def scheduler(self, **policy: Any) -> Any:
        chosen = dataclasses.replace(policy_of(self.services), **policy)
        return scheduler_pass(
            self.services.uow(),
            self.services.queue,
            schedule_sender(self.services),
            policy=chosen,
            clock=self.clock,
        )

    def drain(self, wait_seconds: int = 0) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait_seconds,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return received
            received.extend(batch)

    def worker(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        event = sqs_event(messages, arn["Attributes"]["QueueArn"])
        return process_send_batch(event, FakeLambdaContext("mailroom-worker"), self.services)

    def message(self, message_id: str) -> dict[str, Any]:
        status, body = self.call("GET", f"/v1/messages/{message_id}")
        assert status == 200, body
        return body


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    copied = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copied)
    return copied


@pytest.fixture
def stack(
    database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink, templates: Path
) -> Stack:
    return Stack(database_url_of(database), redis_url, queue_url, smtp_sink.port, templates)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


# --- POST /v1/send with scheduled_at --------------------------------------------


class TestScheduledSend:
    def test_a_scheduled_send_waits_for_its_time_then_goes_once(
        self, stack: Stack, smtp_sink: SmtpSink
    ) -> None:
        # GIVEN a send for ten minutes from now, written in Berlin time
        berlin = (stack.clock.now() + timedelta(minutes=10)).astimezone(
            __import__("zoneinfo").ZoneInfo("Europe/Berlin")
        )
        status, accepted = stack.send(scheduled_at=berlin.isoformat())
        # THEN it is accepted as scheduled, the time echoed in UTC, and nothing is queued
        assert status == 202, accepted
        assert accepted["status"] == "scheduled"
        due = datetime.fromisoformat(accepted["scheduled_at"])
        assert due.utcoffset() == timedelta(0)
        assert due == stack.clock.now() + timedelta(minutes=10)
        assert stack.queue.entries == []
        # ...a scheduler pass now leaves it alone (due beyond the look-ahead)...
        assert stack.scheduler().enqueued == 0
        # WHEN the clock reaches 60 s before its time
        stack.clock.move(minutes=9)
        report = stack.scheduler()
        # THEN it is enqueued once, held back by SQS for the 60 s left
        assert report.enqueued == 1
        assert [(e.message_id, e.delay_seconds) for e in stack.queue.entries] == [
            (uuid.UUID(accepted["id"]), 60)
        ]
        # ...and a second pass does not enqueue it again
        assert stack.scheduler().enqueued == 0
        view = stack.message(accepted["id"])
        assert view["status"] == "scheduled"
        assert [e["type"] for e in view["events"]] == ["accepted", "scheduled"]
        assert smtp_sink.received == []

    def test_one_due_in_seconds_is_enqueued_at_once_and_sent_on_time(
        self, stack: Stack, smtp_sink: SmtpSink
    ) -> None:
        # GIVEN a send due two seconds from now (within the look-ahead)
        stack.clock.moment = datetime.now(UTC)
        due = stack.clock.now() + timedelta(seconds=2)
        status, accepted = stack.send(scheduled_at=_iso(due))
        assert (status, accepted["status"]) == (202, "scheduled")
        # THEN the API enqueued it itself, delayed until its time
        (entry,) = stack.queue.entries
        assert entry.delay_seconds == 2
        # WHEN the record comes out of SQS and the worker runs
        received = stack.drain(wait_seconds=5)
        assert len(received) == 1
        assert stack.worker(received) == {"batchItemFailures": []}
        # THEN it was sent once, and the sent event says how late
        assert len(smtp_sink.received) == 1
        view = stack.message(accepted["id"])
        assert view["status"] == "sent"
        sent = next(e for e in view["events"] if e["type"] == "sent")
        assert isinstance(sent["detail"]["fired_late_ms"], int)
        assert -2000 <= sent["detail"]["fired_late_ms"] < 10_000

    def test_naive_far_and_malformed_times_are_refused_and_nothing_is_written(
        self, stack: Stack, database: Database
    ) -> None:
        now = stack.clock.now()
        for value in (
            "2026-12-24T09:00:00",
            _iso(now + timedelta(days=31)),
            "tomorrow",
            1_800_000_000,
            "2026-02-30T09:00:00Z",
        ):
            status, body = stack.send(scheduled_at=value)
            assert status == 422, (value, body)
            assert body["error"]["code"] == "validation_error"
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM messages")).scalar_one() == 0

    def test_a_time_already_past_sends_now_and_says_so(self, stack: Stack) -> None:
        status, accepted = stack.send(scheduled_at=_iso(stack.clock.now() - timedelta(hours=1)))
        assert status == 202
        assert accepted["status"] == "queued"
        assert "sent now" in accepted["note"]
        assert len(stack.drain()) == 1

    def test_the_list_filters_scheduled_messages_and_health_reports_overdue(
        self, stack: Stack
    ) -> None:
        # GIVEN one scheduled message and one ordinary one
        _, later = stack.send(scheduled_at=_iso(stack.clock.now() + timedelta(hours=2)))
        stack.send()
        # THEN the list filter finds the scheduled one only
        status, page = stack.call("GET", "/v1/messages", status="scheduled")
        assert status == 200
        assert [m["id"] for m in page["messages"]] == [later["id"]]
        # ...and health says how overdue the oldest still-scheduled message is:
        # none yet; then, seen from three hours on, an hour
        status, health = stack.call("GET", "/health")
        assert health["backlog"]["oldest_overdue_scheduled_seconds"] == 0.0
        stack.clock.move(hours=3)
        status, health = stack.call("GET", "/health")
        assert 3590 <= health["backlog"]["oldest_overdue_scheduled_seconds"] <= 3610


# --- cancel and reschedule ---------------------------------------------------------


class TestCancelAndReschedule:
    def test_cancel_then_the_scheduler_and_worker_leave_it_alone(
        self, stack: Stack, smtp_sink: SmtpSink
    ) -> None:
        stack.clock.moment = datetime.now(UTC)
        _, accepted = stack.send(scheduled_at=_iso(stack.clock.now() + timedelta(seconds=1)))
        # WHEN it is cancelled after the API enqueued it
        status, body = stack.call("POST", f"/v1/messages/{accepted['id']}/cancel")
        assert (status, body["status"]) == (200, "cancelled")
        # THEN the record, when it arrives, sends nothing
        received = stack.drain(wait_seconds=3)
        assert stack.worker(received) == {"batchItemFailures": []}
        assert smtp_sink.received == []
        view = stack.message(accepted["id"])
        assert view["status"] == "cancelled"
        assert [e["type"] for e in view["events"]] == ["accepted", "scheduled", "cancelled"]
        # ...and a second cancel, or a move, is 409 not_scheduled
        status, body = stack.call("POST", f"/v1/messages/{accepted['id']}/cancel")
        assert (status, body["error"]["code"]) == (409, "not_scheduled")
        status, body = stack.call(
            "PATCH", f"/v1/messages/{accepted['id']}", {"scheduled_at": _iso(stack.clock.now())}
        )
        assert (status, body["error"]["code"]) == (409, "not_scheduled")

    def test_a_sent_message_cannot_be_cancelled_and_unknown_ids_are_404(self, stack: Stack) -> None:
        _, accepted = stack.send()
        status, body = stack.call("POST", f"/v1/messages/{accepted['id']}/cancel")
        assert (status, body["error"]["code"]) == (409, "not_scheduled")
        for unknown in (str(uuid.uuid4()), "not-an-id"):
            status, body = stack.call("POST", f"/v1/messages/{unknown}/cancel")
            assert (status, body["error"]["code"]) == (404, "message_not_found")

    def test_reschedule_moves_it_and_the_old_record_is_dropped(
        self, stack: Stack, smtp_sink: SmtpSink
    ) -> None:
        # GIVEN a message the API enqueued, due in a second
        stack.clock.moment = datetime.now(UTC)
        _, accepted = stack.send(scheduled_at=_iso(stack.clock.now() + timedelta(seconds=1)))
        # WHEN it is moved an hour on
        later = stack.clock.now() + timedelta(hours=1)
        status, body = stack.call(
            "PATCH", f"/v1/messages/{accepted['id']}", {"scheduled_at": _iso(later)}
        )
        assert status == 200, body
        assert datetime.fromisoformat(body["scheduled_at"]) == later
        # THEN the record already out is acknowledged without sending
        received = stack.drain(wait_seconds=3)
        assert len(received) == 1
        assert stack.worker(received) == {"batchItemFailures": []}
        assert smtp_sink.received == []
        view = stack.message(accepted["id"])
        assert view["status"] == "scheduled"
        assert view["events"][-1]["type"] == "rescheduled"
        # ...and the scheduler enqueues it again near its new time
        stack.clock.moment = later - timedelta(seconds=30)
        assert stack.scheduler().enqueued == 1


def test_a_cancel_racing_the_worker_never_lets_the_message_out(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    """The worker claims with a conditional UPDATE of the row the cancel updates: one wins."""
    # GIVEN messages due now, released to the queue (their records are not needed:
    # the worker is called with their ids, at the moment the cancel comes)
    rounds = 40
    stack.clock.moment = datetime.now(UTC)
    ids: list[str] = []
    for _ in range(rounds):
        status, accepted = stack.send(scheduled_at=_iso(stack.clock.now() + timedelta(seconds=1)))
        assert status == 202
        ids.append(accepted["id"])
    stack.drain()
    worker_services = bootstrap(stack.settings)
    outcomes: list[tuple[bool, DeliveryResult]] = []
    for message_id in ids:
        start = threading.Barrier(2)

        def cancel(message_id: str = message_id, start: threading.Barrier = start) -> bool:
            start.wait()
            try:
                schedules.cancel_message(
                    stack.services.uow(), client_id=stack.client.client.id, message_id=message_id
                )
            except NotScheduled:
                return False
            return True

        def dispatch(message_id: str = message_id, start: threading.Barrier = start) -> Any:
            start.wait()
            return deliver_message(
                worker_services.uow(),
                worker_services.templates,
                worker_services.renderer,
                worker_services.providers,
                message_id=uuid.UUID(message_id),
                max_attempts=3,
            ).result

        # WHEN the cancel and the dispatch start at the same moment
        with ThreadPoolExecutor(max_workers=2) as pool:
            cancelled = pool.submit(cancel)
            dispatched = pool.submit(dispatch)
            outcomes.append((cancelled.result(), dispatched.result()))
    # THEN every round has exactly one winner: a cancel that answered OK sent
    # nothing, and a message sent answered the cancel 409
    for (was_cancelled, result), message_id in zip(outcomes, ids, strict=True):
        status = stack.message(message_id)["status"]
        if was_cancelled:
            assert (result, status) == (DeliveryResult.ALREADY_DONE, "cancelled")
        else:
            assert (result, status) == (DeliveryResult.SENT, "sent")
    sent = sum(1 for was_cancelled, _ in outcomes if not was_cancelled)
    assert len(smtp_sink.received) == sent


# --- the scheduler -------------------------------------------------------------------


def _insert_scheduled(database: Database, client_id: uuid.UUID, count: int, due: datetime) -> None:
    """``count`` scheduled rows, as any route (a batch one, say) would write them."""
    with database.engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO messages (id, client_id, trace_id, template_name, from_address,
                                      recipient, to_addresses, status, scheduled_at)
                SELECT gen_random_uuid(), :client_id, md5(n::text), 'welcome',
                       'noreply@example.com', 'ada@example.com',
                       '["ada@example.com"]'::jsonb, 'scheduled',
                       CAST(:due AS timestamptz) + make_interval(secs => mod(n, 50))
                FROM generate_series(1, :count) AS n
                """
            ),
            {"client_id": client_id, "count": count, "due": due},
        )


def test_two_schedulers_at_once_enqueue_each_message_once(stack: Stack, database: Database) -> None:
    # GIVEN 200 messages due within the minute, written straight to PostgreSQL
    # (moto's SQS slows down as its queue grows: a few hundred keep this quick)
    _insert_scheduled(database, stack.client.client.id, 200, stack.clock.now())
    queues = [RecordingSqsQueue(stack.queue_url) for _ in range(2)]
    start = threading.Barrier(2)

    def run(queue: RecordingSqsQueue) -> Any:
        services = bootstrap(stack.settings, queue=queue, clock=stack.clock)
        start.wait()
        return scheduler_pass(
            services.uow(),
            queue,
            schedule_sender(services),
            policy=SchedulerPolicy(chunk_size=20),
            clock=stack.clock,
        )

    # WHEN two schedulers run over them at the same moment, in chunks of 20
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(run, queues))
    # THEN between them every message was enqueued, none twice
    enqueued = [entry.message_id for queue in queues for entry in queue.entries]
    assert len(enqueued) == 200
    assert len(set(enqueued)) == 200
    assert sum(report.enqueued for report in reports) == 200
    # ...and both took part (SKIP LOCKED let them share, not queue up)
    assert all(report.chunks > 0 for report in reports)
    # ...each with the delay left until its own time
    assert {entry.delay_seconds for queue in queues for entry in queue.entries} <= set(range(51))
    with database.engine.connect() as connection:
        unreleased = connection.execute(
            text("SELECT count(*) FROM messages WHERE enqueued_at IS NULL")
        ).scalar_one()
    assert unreleased == 0
    # ...and SQS holds the records (those due now are visible at once)
    assert len(stack.drain()) >= sum(
        1 for queue in queues for entry in queue.entries if entry.delay_seconds == 0
    )


def test_the_scheduler_takes_only_rows_due_and_respects_its_budget(
    stack: Stack, database: Database
) -> None:
    _insert_scheduled(database, stack.client.client.id, 30, stack.clock.now() + timedelta(hours=1))
    _insert_scheduled(database, stack.client.client.id, 30, stack.clock.now())
    # A spent budget starts no chunk
    report = stack.scheduler(time_budget_seconds=1e-9)
    assert (report.enqueued, report.budget_exhausted) == (0, True)
    report = stack.scheduler(chunk_size=7)
    assert (report.enqueued, report.chunks) == (30, 5)


def test_a_release_lost_on_the_way_is_enqueued_again_once_stale(
    stack: Stack, database: Database
) -> None:
    # GIVEN a message the scheduler released long ago that is still scheduled
    # (its SQS record was lost)
    _insert_scheduled(database, stack.client.client.id, 1, stack.clock.now())
    assert stack.scheduler().enqueued == 1
    stack.clock.move(minutes=5)
    assert stack.scheduler().enqueued == 0
    # WHEN it has been overdue for longer than SCHEDULER_STALE_SECONDS
    stack.clock.move(minutes=6)
    # THEN the scheduler enqueues it again (the worker's claim still sends it once)
    assert stack.scheduler().enqueued == 1


# --- recurring schedules -------------------------------------------------------------


def _schedule_body(**fields: Any) -> dict[str, Any]:
    return {
        "name": "daily welcome",
        "cron": "*/5 * * * *",
        "timezone": "Europe/Berlin",
        "send": WELCOME_BODY,
        **fields,
    }


class TestSchedules:
    def test_create_read_list_and_the_next_run_in_utc_and_local_time(self, stack: Stack) -> None:
        stack.clock.moment = datetime(2026, 12, 6, 10, 2, tzinfo=UTC)
        status, created = stack.call("POST", "/v1/schedules", _schedule_body(cron="30 9 * * *"))
        assert status == 201, created
        assert created["state"] == "active"
        assert datetime.fromisoformat(created["next_run_at"]) == datetime(
            2026, 12, 7, 8, 30, tzinfo=UTC
        )
        assert created["next_run_at_local"] == "2026-12-07T09:30:00+01:00"
        status, one = stack.call("GET", f"/v1/schedules/{created['id']}")
        assert (status, one["id"]) == (200, created["id"])
        status, page = stack.call("GET", "/v1/schedules")
        assert [s["id"] for s in page["schedules"]] == [created["id"]]

    @pytest.mark.parametrize(
        ("fields", "type_"),
        [
            ({"cron": "61 * * * *"}, "invalid_cron"),
            ({"cron": "0 0 30 2 *"}, "invalid_cron"),
            ({"timezone": "Mars/Olympus_Mons"}, "unknown_timezone"),
            (
                {"starts_at": "2027-01-02T00:00:00Z", "ends_at": "2027-01-01T00:00:00Z"},
                "ends_before_start",
            ),
        ],
    )
    def test_bad_schedules_are_refused_at_creation(
        self, stack: Stack, fields: dict[str, Any], type_: str
    ) -> None:
        status, body = stack.call("POST", "/v1/schedules", _schedule_body(**fields))
        assert status == 422, body
        assert body["error"]["details"][0]["type"] == type_
        assert stack.call("GET", "/v1/schedules")[1]["schedules"] == []

    def test_a_payload_that_would_fail_is_refused_at_creation(self, stack: Stack) -> None:
        unknown = {**WELCOME_BODY, "template": "no-such-template"}
        status, body = stack.call("POST", "/v1/schedules", _schedule_body(send=unknown))
        assert (status, body["error"]["code"]) == (422, "unknown_template")
        missing = {**WELCOME_BODY, "props": {}}
        status, body = stack.call("POST", "/v1/schedules", _schedule_body(send=missing))
        assert status == 422
        assert body["error"]["code"] in ("invalid_props", "missing_prop")
        timed = {**WELCOME_BODY, "scheduled_at": _iso(stack.clock.now())}
        status, body = stack.call("POST", "/v1/schedules", _schedule_body(send=timed))
        assert status == 422

    def test_a_run_sends_an_ordinary_message_linked_to_the_schedule_and_run(
        self, stack: Stack
    ) -> None:
        status, created = stack.call("POST", "/v1/schedules", _schedule_body())
        assert status == 201
        stack.clock.moment = datetime.fromisoformat(created["next_run_at"]) + timedelta(seconds=3)
        report = stack.scheduler()
        assert report.runs_started == 1
        _, runs = stack.call("GET", f"/v1/schedules/{created['id']}/runs")
        (run,) = runs["runs"]
        assert (run["status"], run["trigger"]) == ("sent", "cron")
        (message_id,) = run["message_ids"]
        view = stack.message(message_id)
        assert (view["schedule_id"], view["schedule_run_id"]) == (created["id"], run["id"])
        assert view["status"] == "queued"
        # ...and the schedule moved on to its next fire time
        _, after = stack.call("GET", f"/v1/schedules/{created['id']}")
        assert datetime.fromisoformat(after["next_run_at"]) > stack.clock.now()
        # ...and a second scheduler pass runs nothing more
        assert stack.scheduler().runs_started == 0

    def test_pause_resume_and_run_now(self, stack: Stack) -> None:
        _, created = stack.call("POST", "/v1/schedules", _schedule_body())
        path = f"/v1/schedules/{created['id']}"
        status, paused = stack.call("POST", f"{path}/pause")
        assert (status, paused["state"]) == (200, "paused")
        # run now on a paused schedule is a clear 409
        status, body = stack.call("POST", f"{path}/run")
        assert (status, body["error"]["code"]) == (409, "schedule_paused")
        # nothing fires while paused
        stack.clock.move(hours=1)
        assert stack.scheduler().runs_started == 0
        status, resumed = stack.call("POST", f"{path}/resume")
        assert (status, resumed["state"]) == (200, "active")
        assert datetime.fromisoformat(resumed["next_run_at"]) > stack.clock.now()
        status, run = stack.call("POST", f"{path}/run")
        assert (status, run["status"], run["trigger"]) == (201, "sent", "run_now")
        status, patched = stack.call("PATCH", path, {"cron": "0 12 * * *", "name": "noon"})
        assert (status, patched["name"], patched["cron"]) == (200, "noon", "0 12 * * *")
        status, _ = stack.call("DELETE", path)
        assert status == 200
        assert stack.call("GET", path)[0] == 404

    def test_a_deleted_template_fails_the_run_visibly_and_the_schedule_goes_on(
        self, stack: Stack
    ) -> None:
        # GIVEN a schedule of a template that exists at creation
        shutil.copytree(stack.templates / "welcome", stack.templates / "digest")
        body = _schedule_body(send={**WELCOME_BODY, "template": "digest"})
        status, created = stack.call("POST", "/v1/schedules", body)
        assert status == 201, created
        # WHEN the template is deleted and the schedule's time comes
        shutil.rmtree(stack.templates / "digest")
        first = datetime.fromisoformat(created["next_run_at"])
        stack.clock.moment = first + timedelta(seconds=1)
        report = stack.scheduler()
        # THEN the run failed, saying why, and the schedule moved on
        assert report.runs_failed == 1
        _, runs = stack.call("GET", f"/v1/schedules/{created['id']}/runs")
        (run,) = runs["runs"]
        assert (run["status"], run["detail"]["code"]) == ("failed", "unknown_template")
        assert run["message_ids"] == []
        _, after = stack.call("GET", f"/v1/schedules/{created['id']}")
        assert after["state"] == "active"
        assert datetime.fromisoformat(after["next_run_at"]) == first + timedelta(minutes=5)
        # ...and once the template is back, the next run sends
        shutil.copytree(stack.templates / "welcome", stack.templates / "digest")
        stack.clock.move(minutes=5)
        assert stack.scheduler().runs_started == 1

    def test_a_suspended_clients_runs_are_skipped_with_a_reason(
        self, stack: Stack, database: Database
    ) -> None:
        _, created = stack.call("POST", "/v1/schedules", _schedule_body())
        with database.engine.begin() as connection:
            connection.execute(
                text("UPDATE clients SET status = 'suspended' WHERE id = :id"),
                {"id": stack.client.client.id},
            )
        stack.clock.moment = datetime.fromisoformat(created["next_run_at"])
        report = stack.scheduler()
        assert report.runs_skipped == 1
        with database.engine.connect() as connection:
            status, detail = connection.execute(
                text("SELECT status, detail FROM schedule_runs WHERE schedule_id = :id"),
                {"id": created["id"]},
            ).one()
            messages = connection.execute(text("SELECT count(*) FROM messages")).scalar_one()
        assert (status, detail["reason"], messages) == ("skipped", "client_suspended", 0)

    @pytest.mark.parametrize("policy", ["send", "skip"])
    def test_a_scheduler_down_for_an_hour_catches_up_under_its_policy(
        self, stack: Stack, database: Database, policy: str
    ) -> None:
        # GIVEN every five minutes, a one-minute grace
        stack.clock.moment = datetime(2026, 12, 6, 10, 0, 30, tzinfo=UTC)
        body = _schedule_body(misfire_policy=policy, misfire_grace_seconds=60)
        _, created = stack.call("POST", "/v1/schedules", body)
        # WHEN the scheduler is down from 10:00:30 until 11:02:30
        stack.clock.moment = datetime(2026, 12, 6, 11, 2, 30, tzinfo=UTC)
        report = stack.scheduler()
        # THEN one pass catches up: send runs once for the twelve fire times
        # (10:05 ... 11:00), skip runs none and records them as skipped
        _, runs = stack.call("GET", f"/v1/schedules/{created['id']}/runs")
        (run,) = runs["runs"]
        assert run["detail"]["missed"]["count"] == (11 if policy == "send" else 12)
        with database.engine.connect() as connection:
            messages = connection.execute(text("SELECT count(*) FROM messages")).scalar_one()
        if policy == "send":
            assert (run["status"], run["trigger"], messages) == ("sent", "catch_up", 1)
            assert report.runs_started == 1
        else:
            assert (run["status"], run["detail"]["reason"], messages) == ("skipped", "misfire", 0)
            assert report.runs_skipped == 1
        # ...and the schedule goes on from its next fire time, not the missed ones
        _, after = stack.call("GET", f"/v1/schedules/{created['id']}")
        assert after["next_run_at"].startswith("2026-12-06T11:05:00")
        assert stack.scheduler().runs_started == 0


def test_runs_wait_for_no_one_and_the_worker_sends_a_runs_message(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a run's message (an ordinary queued message)
    _, created = stack.call("POST", "/v1/schedules", _schedule_body())
    status, run = stack.call("POST", f"/v1/schedules/{created['id']}/run")
    assert status == 201
    # WHEN the worker takes it
    received = stack.drain(wait_seconds=1)
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        received = stack.drain(wait_seconds=1)
    assert stack.worker(received) == {"batchItemFailures": []}
    # THEN it is sent like any other
    assert len(smtp_sink.received) == 1
    assert stack.message(run["message_ids"][0])["status"] == "sent"


def test_the_scheduler_function_reports_its_pass(stack: Stack, database: Database) -> None:
    # GIVEN rows due now, and the function's own entrypoint (as Lambda calls it)
    _insert_scheduled(database, stack.client.client.id, 3, stack.clock.now())
    event = json.loads(
        (Path(__file__).resolve().parents[2] / "events/scheduler/tick.json").read_text()
    )
    # WHEN EventBridge Scheduler's event invokes it
    counts = run_scheduler(event, FakeLambdaContext("mailroom-scheduler"), stack.services)
    # THEN it released them and says so
    assert counts["enqueued"] == 3
    assert counts["chunks"] == 1
    assert counts["budget_exhausted"] is False
