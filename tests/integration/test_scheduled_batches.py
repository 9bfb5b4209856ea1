"""Scheduled bulk batches and schedules with batch payloads (issue 18 on issue 17's batches).

Real PostgreSQL and Redis, SQS and S3 from moto; time is a clock the tests
move. A scheduled batch waits as one row; the scheduler hands it to the
planner queue (delayed to its time) and the planner plans it then.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import threading
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.queue import SqsPlannerQueue
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.tenancy import QuotaPeriod
from mailroom.entrypoints.api import create_api, status_routes
from mailroom.entrypoints.batches import batch_routes
from mailroom.entrypoints.scheduler import policy_of
from mailroom.entrypoints.schedules import schedule_routes, schedule_sender
from mailroom.services.batches import PlanResult, plan_batch
from mailroom.services.clients import RegisteredClient, register_client
from mailroom.services.scheduler import SchedulerReport, scheduler_pass
from tests.events import FakeLambdaContext, request_event

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
WELCOME_BODY: dict[str, Any] = json.loads(
    json.loads((Path(__file__).resolve().parents[2] / "events/send/send-welcome.json").read_text())[
        "body"
    ]
)
# The welcome template's props, shared by a batch; each recipient names its own first_name.
SHARED_PROPS = {key: value for key, value in WELCOME_BODY["props"].items() if key != "first_name"}


class MovableClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment

    def move(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


class RecordingPlannerQueue(SqsPlannerQueue):
    """The real planner queue (moto), remembering each request and its delay."""

    def __init__(self, queue_url: str) -> None:
        super().__init__(queue_url, "us-east-1")
        self.requests: list[tuple[uuid.UUID, int]] = []
        self._lock = threading.Lock()

    def request_planning(
        self, batch_id: uuid.UUID, trace_id: str, *, delay_seconds: int = 0
    ) -> None:
        super().request_planning(batch_id, trace_id, delay_seconds=delay_seconds)
        with self._lock:
            self.requests.append((batch_id, delay_seconds))


class Stack:
    def __init__(self, database: Database, redis_url: str, queue_url: str) -> None:
        self.database = database
        self.queue_url = queue_url
        self.sqs = boto3.client("sqs", region_name="us-east-1")
        self.planner_queue_url = self.sqs.create_queue(QueueName=f"planner-{uuid.uuid4().hex[:8]}")[
            "QueueUrl"
        ]
        bucket = f"batches-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
        self.clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
        self.settings = Settings(
            database_url=database.engine.url.render_as_string(hide_password=False),
            redis_url=redis_url,
            queue_url=queue_url,
            planner_queue_url=self.planner_queue_url,
            batch_uploads_bucket=bucket,
            templates_dir=TEMPLATES,
        )
        self.planner = RecordingPlannerQueue(self.planner_queue_url)
        self.services: Services = self.services_with(self.planner)
        self.client: RegisteredClient = register_client(
            self.services.uow(), self.services.hasher, name=f"acme-{uuid.uuid4().hex[:6]}"
        )
        self.api = create_api(
            [
                batch_routes(lambda: self.services),
                schedule_routes(lambda: self.services),
                status_routes(lambda: self.services),
            ],
            max_request_bytes=lambda: self.settings.batch_max_request_bytes,
        )

    def services_with(self, planner: RecordingPlannerQueue) -> Services:
        return bootstrap(self.settings, planner_queue=planner, clock=self.clock)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        event = request_event(
            method,
            path,
            body=body,
            X_Api_Key=self.client.api_key,
            X_Api_Secret=self.client.api_secret,
        )
        event["headers"]["Content-Type"] = "application/json"
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"] or "null")

    def batch(self, people: int, **fields: Any) -> tuple[int, dict[str, Any]]:
        return self.call(
            "POST",
            "/v1/batches",
            {"template": "welcome", "props": SHARED_PROPS, "recipients": recipients(people)}
            | fields,
        )

    def scheduler(self, services: Services | None = None, **policy: Any) -> SchedulerReport:
        active = services or self.services
        return scheduler_pass(
            active.uow(),
            active.queue,
            schedule_sender(active),
            policy=dataclasses.replace(policy_of(active), **policy),
            clock=self.clock,
            planner=active.planner_queue,
        )

    def plan(self, batch_id: str) -> PlanResult:
        return plan_batch(
            self.services.uow(),
            self.services.queue,
            self.services.recipient_files,
            batch_id=uuid.UUID(batch_id),
            chunk_size=50,
            now=self.clock.now(),
        )

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.database.engine.connect() as connection:
            return list(connection.execute(text(sql), params).all())

    def messages_of(self, batch_id: str) -> list[str]:
        return [
            str(row[0])
            for row in self.rows(
                "SELECT id FROM messages WHERE batch_id = :b", b=uuid.UUID(batch_id)
            )
        ]

    def drain(self, url: str | None = None) -> list[str]:
        """Every record on the queue (received once, deleted): message or batch ids."""
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
def stack(database: Database, redis_url: str, queue_url: str) -> Stack:
    return Stack(database, redis_url, queue_url)


def recipients(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"to": f"user{i}@example.com", "props": {"first_name": f"User {i}"}}
        for i in range(start, start + count)
    ]


def upload(url: str, data: bytes) -> None:
    # Without a Content-Type urllib sends a form's, whose body moto drops.
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "application/x-ndjson"}
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200


# --- POST /v1/batches with scheduled_at ---------------------------------------------


def test_a_scheduled_batch_waits_and_is_planned_once_at_its_time(stack: Stack) -> None:
    # GIVEN a batch of 30 for ten minutes from now, written in Berlin time
    due = stack.clock.now() + timedelta(minutes=10)
    status, accepted = stack.batch(
        30, scheduled_at=due.astimezone(ZoneInfo("Europe/Berlin")).isoformat()
    )
    # THEN it is accepted as scheduled, its time echoed in UTC, and nothing is planned
    assert status == 202, accepted
    assert (accepted["status"], accepted["total"], accepted["note"]) == ("scheduled", 30, None)
    echoed = datetime.fromisoformat(accepted["scheduled_at"])
    assert (echoed, echoed.utcoffset()) == (due, timedelta(0))
    batch_id = accepted["id"]
    assert stack.planner.requests == []
    status, view = stack.call("GET", f"/v1/batches/{batch_id}")
    assert (view["status"], view["started_at"], view["planned"]) == ("scheduled", None, 0)
    # ...a scheduler pass now leaves it alone (due beyond the look-ahead)
    assert stack.scheduler().batches_released == 0

    # WHEN the clock reaches 60 s before its time
    stack.clock.move(minutes=9)
    report = stack.scheduler()
    # THEN it goes to the planner once, held back by SQS for the 60 s left
    assert report.batches_released == 1
    assert stack.planner.requests == [(uuid.UUID(batch_id), 60)]
    assert stack.scheduler().batches_released == 0
    # ...and a planner record that came early plans nothing and asks again at its time
    assert stack.plan(batch_id) == PlanResult(done=False, wait_seconds=60)
    assert stack.messages_of(batch_id) == []

    # WHEN its time comes and the planner runs
    stack.clock.move(seconds=60)
    assert stack.plan(batch_id).done
    # THEN every recipient has one message, each enqueued once for the worker
    messages = stack.messages_of(batch_id)
    assert len(messages) == 30
    assert sorted(stack.drain()) == sorted(messages)
    status, view = stack.call("GET", f"/v1/batches/{batch_id}")
    assert (view["status"], view["queued"]) == ("sending", 30)
    assert view["started_at"] is not None
    # ...and neither a second planner record nor later passes plan it again
    stack.plan(batch_id)
    stack.clock.move(minutes=20)
    assert stack.scheduler().batches_released == 0
    assert len(stack.messages_of(batch_id)) == 30
    assert stack.drain() == []


def test_one_due_within_the_look_ahead_goes_to_the_planner_at_once(stack: Stack) -> None:
    # GIVEN a batch due in 30 s (the scheduler's next pass may be a minute away)
    status, accepted = stack.batch(
        2, scheduled_at=(stack.clock.now() + timedelta(seconds=30)).isoformat()
    )
    assert (status, accepted["status"]) == (202, "scheduled")
    # THEN the API released it itself, delayed by SQS to its time, and the scheduler does not
    assert stack.planner.requests == [(uuid.UUID(accepted["id"]), 30)]
    assert stack.scheduler().batches_released == 0
    assert stack.drain(stack.planner_queue_url) == []  # held back by its delay


def test_bad_times_are_refused_and_a_past_time_plans_now_with_a_note(stack: Stack) -> None:
    now = stack.clock.now()
    # GIVEN a naive time and one 31 days ahead: 422, nothing written
    for value in ("2026-12-24T09:00:00", (now + timedelta(days=31)).isoformat()):
        status, body = stack.batch(2, scheduled_at=value)
        assert (status, body["error"]["code"]) == (422, "validation_error"), body
    assert stack.rows("SELECT id FROM batches") == []
    # WHEN the time has passed
    status, body = stack.batch(2, scheduled_at=(now - timedelta(minutes=5)).isoformat())
    # THEN the batch is planned now and the answer says so
    assert (status, body["status"]) == (202, "accepted"), body
    assert body["note"] == "scheduled_at has passed: the batch is sent now"
    assert datetime.fromisoformat(body["scheduled_at"]) == now - timedelta(minutes=5)
    assert stack.planner.requests == [(uuid.UUID(body["id"]), 0)]


@pytest.mark.parametrize("released_first", [False, True])
def test_cancel_before_it_fires_sends_nothing(stack: Stack, released_first: bool) -> None:
    # GIVEN a batch scheduled for five minutes from now
    due = stack.clock.now() + timedelta(minutes=5)
    _, accepted = stack.batch(10, scheduled_at=due.isoformat())
    batch_id = accepted["id"]
    if released_first:
        # ...already handed to the planner queue (its record is on the way)
        stack.clock.moment = due - timedelta(seconds=30)
        assert stack.scheduler().batches_released == 1

    # WHEN it is cancelled before its time
    status, view = stack.call("POST", f"/v1/batches/{batch_id}/cancel")
    assert (status, view["status"]) == (200, "cancelled"), view

    # THEN at its time the scheduler releases nothing and the planner plans nothing
    stack.clock.moment = due + timedelta(seconds=1)
    assert stack.scheduler().batches_released == 0
    assert stack.plan(batch_id).done
    assert stack.messages_of(batch_id) == []
    assert stack.drain() == []
    status, view = stack.call("GET", f"/v1/batches/{batch_id}")
    assert (view["status"], view["planned"], view["sent"]) == ("cancelled", 0, 0)
    # ...and a second cancel is a 409
    status, again = stack.call("POST", f"/v1/batches/{batch_id}/cancel")
    assert (status, again["error"]["code"]) == (409, "batch_state_conflict")


def test_two_schedulers_at_once_release_each_batch_once(stack: Stack) -> None:
    # GIVEN 12 batches of 3 due within the same minute
    due = stack.clock.now() + timedelta(minutes=5)
    ids = []
    for n in range(12):
        status, accepted = stack.batch(3, scheduled_at=(due + timedelta(seconds=n)).isoformat())
        assert status == 202, accepted
        ids.append(uuid.UUID(accepted["id"]))
    stack.clock.moment = due - timedelta(seconds=20)
    planners = [RecordingPlannerQueue(stack.planner_queue_url) for _ in range(2)]
    start = threading.Barrier(2)

    def run(planner: RecordingPlannerQueue) -> SchedulerReport:
        services = stack.services_with(planner)
        start.wait()
        return stack.scheduler(services, chunk_size=2)

    # WHEN two schedulers run over them at the same moment, two batches a chunk
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(run, planners))
    # THEN between them every batch went to the planner, none twice
    released = [batch_id for planner in planners for batch_id, _ in planner.requests]
    assert sorted(released) == sorted(ids)
    assert sum(report.batches_released for report in reports) == 12
    assert stack.rows("SELECT id FROM batches WHERE released_at IS NULL") == []
    # ...and once planned at their time, every recipient has exactly one message
    stack.clock.moment = due + timedelta(seconds=12)
    for batch_id in ids:
        stack.plan(str(batch_id))
    counts = stack.rows(
        "SELECT count(*), count(DISTINCT (batch_id, batch_index)) FROM messages "
        "WHERE batch_id = ANY(CAST(:ids AS uuid[]))",
        ids="{" + ",".join(str(i) for i in ids) + "}",
    )
    assert counts == [(36, 36)]


def test_a_lost_planner_record_is_released_again_once_stale(stack: Stack) -> None:
    due = stack.clock.now() + timedelta(minutes=5)
    _, accepted = stack.batch(1, scheduled_at=due.isoformat())
    stack.clock.moment = due - timedelta(seconds=10)
    assert stack.scheduler().batches_released == 1
    # GIVEN its record was lost: the batch is still scheduled long after its time
    stack.clock.moment = due + timedelta(minutes=5)
    assert stack.scheduler().batches_released == 0
    stack.clock.moment = due + timedelta(minutes=11)
    # THEN the scheduler releases it again (the planner plans a batch once anyway)
    assert stack.scheduler().batches_released == 1
    stack.plan(accepted["id"])
    stack.plan(accepted["id"])
    assert len(stack.messages_of(accepted["id"])) == 1


def test_an_uploaded_batch_with_scheduled_at_waits_after_start(stack: Stack) -> None:
    # GIVEN an upload batch scheduled for an hour from now
    due = stack.clock.now() + timedelta(hours=1)
    status, body = stack.call(
        "POST",
        "/v1/batches",
        {
            "template": "welcome",
            "props": SHARED_PROPS,
            "recipients_upload": True,
            "scheduled_at": due.isoformat(),
        },
    )
    assert (status, body["status"]) == (202, "awaiting_upload"), body
    assert datetime.fromisoformat(body["scheduled_at"]) == due
    lines = [json.dumps(r) for r in recipients(40)]
    upload(body["upload_url"], ("\n".join(lines) + "\n").encode())

    # WHEN it is started
    status, started = stack.call("POST", f"/v1/batches/{body['id']}/start")
    # THEN it was checked and frozen, and waits as scheduled: nothing planned
    assert (status, started["status"]) == (200, "scheduled"), started
    assert stack.planner.requests == []
    upload(body["upload_url"], b'{"to": "intruder@example.com"}\n')
    # ...until its time, when the frozen file is planned
    stack.clock.moment = due - timedelta(seconds=45)
    assert stack.scheduler().batches_released == 1
    stack.clock.moment = due
    assert stack.plan(body["id"]).done
    assert len(stack.messages_of(body["id"])) == 40
    assert stack.rows(
        "SELECT count(*) FROM messages WHERE to_addresses ->> 0 = 'intruder@example.com'"
    ) == [(0,)]


# --- PATCH /v1/batches/{id}: moving a scheduled batch ----------------------------------


class PlannerRecords:
    """SQS's part, on the test's clock: each planner record arrives at its send time plus its delay.

    ``walk`` runs a scheduler pass every minute and the planner on each record
    as it arrives (a planner record that comes early asks again, as the
    planner function does), and notes when the batch's first message was
    written: the moment the batch actually fired.
    """

    def __init__(self, stack: Stack, batch_id: str) -> None:
        self.stack = stack
        self.batch_id = batch_id
        self.seen = 0
        self.arrivals: list[tuple[datetime, int]] = []
        self.fired_at: datetime | None = None

    def collect(self, sent_at: datetime) -> None:
        requests = self.stack.planner.requests
        for batch_id, delay in requests[self.seen :]:
            if str(batch_id) == self.batch_id:
                heapq.heappush(self.arrivals, (sent_at + timedelta(seconds=delay), len(requests)))
        self.seen = len(requests)

    def walk(self, until: datetime) -> None:
        tick = self.stack.clock.now()
        while True:
            arrival = self.arrivals[0][0] if self.arrivals else None
            if tick <= until and (arrival is None or tick <= arrival):
                self.stack.clock.moment = tick
                self.stack.scheduler()
                self.collect(tick)
                tick += timedelta(minutes=1)
            elif arrival is not None and arrival <= until:
                heapq.heappop(self.arrivals)
                self.stack.clock.moment = arrival
                result = self.stack.plan(self.batch_id)
                if self.fired_at is None and self.stack.messages_of(self.batch_id):
                    self.fired_at = arrival
                if not result.done:
                    self.stack.planner.request_planning(
                        uuid.UUID(self.batch_id), "planner", delay_seconds=result.wait_seconds
                    )
                self.collect(arrival)
            else:
                return


def _exactly_once(stack: Stack, batch_id: str, people: int) -> None:
    assert stack.rows(
        "SELECT count(*), count(DISTINCT batch_index) FROM messages WHERE batch_id = :b",
        b=uuid.UUID(batch_id),
    ) == [(people, people)]
    assert sorted(stack.drain()) == sorted(stack.messages_of(batch_id))


@pytest.mark.parametrize("move", ["later", "earlier"])
def test_a_moved_batch_fires_once_at_its_new_time_not_at_its_old(stack: Stack, move: str) -> None:
    # GIVEN a batch of 20 for ten minutes from now, already released to the
    # planner queue (its record is on the way, due at the old time)
    old = stack.clock.now() + timedelta(minutes=10)
    _, accepted = stack.batch(20, scheduled_at=old.isoformat())
    batch_id = accepted["id"]
    records = PlannerRecords(stack, batch_id)
    stack.clock.moment = old - timedelta(seconds=60)
    records.walk(stack.clock.now())
    assert records.arrivals == [(old, 1)]

    # WHEN it is moved (in New York time) an hour later, or 30 s earlier
    new = old + timedelta(hours=1) if move == "later" else old - timedelta(seconds=30)
    status, moved = stack.call(
        "PATCH",
        f"/v1/batches/{batch_id}",
        {"scheduled_at": new.astimezone(ZoneInfo("America/New_York")).isoformat()},
    )
    # THEN the answer echoes the new time in UTC, the batch still waiting
    assert status == 200, moved
    assert (moved["status"], moved["note"], moved["total"]) == ("scheduled", None, 20)
    assert datetime.fromisoformat(moved["scheduled_at"]) == new
    records.collect(stack.clock.now())

    # ...and walking the clock past both times, with every record delivered
    # at its time and the scheduler running each minute, the batch fires
    # once, at its new time: the old record plans nothing
    records.walk(max(old, new) + timedelta(minutes=15))
    assert records.fired_at is not None
    assert abs((records.fired_at - new).total_seconds()) <= 2
    _exactly_once(stack, batch_id, 20)
    # ...with one record for each time it was released: the stale one was
    # dropped (moved later) or found the batch planning (moved earlier)
    delays = [delay for planned, delay in stack.planner.requests if str(planned) == batch_id]
    assert delays == ([60, 60] if move == "later" else [60, 30])


def test_moving_refuses_bad_times_and_a_past_time_plans_now_with_a_note(stack: Stack) -> None:
    due = stack.clock.now() + timedelta(hours=2)
    _, accepted = stack.batch(3, scheduled_at=due.isoformat())
    batch_id = accepted["id"]
    # GIVEN a naive time, one 31 days ahead, none at all, an unknown field: 422, unchanged
    for body in (
        {"scheduled_at": "2026-12-24T09:00:00"},
        {"scheduled_at": (stack.clock.now() + timedelta(days=31)).isoformat()},
        {},
        {"scheduled_at": due.isoformat(), "total": 4},
    ):
        status, answer = stack.call("PATCH", f"/v1/batches/{batch_id}", body)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), (body, answer)
    assert stack.rows("SELECT scheduled_at FROM batches WHERE id = :b", b=uuid.UUID(batch_id)) == [
        (due,)
    ]
    assert stack.planner.requests == []
    # WHEN it is moved to a time already past
    status, moved = stack.call(
        "PATCH",
        f"/v1/batches/{batch_id}",
        {"scheduled_at": (stack.clock.now() - timedelta(minutes=5)).isoformat()},
    )
    # THEN it goes to the planner now, and the answer says so
    assert (status, moved["note"]) == (200, "scheduled_at has passed: the batch is sent now")
    assert stack.planner.requests == [(uuid.UUID(batch_id), 0)]
    assert stack.plan(batch_id).done
    assert len(stack.messages_of(batch_id)) == 3


def test_moving_once_planning_began_or_a_batch_never_scheduled_is_409(stack: Stack) -> None:
    soon = stack.clock.now() + timedelta(minutes=5)
    later = {"scheduled_at": (soon + timedelta(hours=1)).isoformat()}
    # GIVEN a scheduled batch whose planner record came at its time
    _, accepted = stack.batch(2, scheduled_at=soon.isoformat())
    stack.clock.moment = soon
    assert stack.plan(accepted["id"]).done
    # WHEN it is moved
    status, answer = stack.call("PATCH", f"/v1/batches/{accepted['id']}", later)
    # THEN 409 not_scheduled, and it is planned once as it was
    assert (status, answer["error"]["code"]) == (409, "not_scheduled"), answer
    assert len(stack.messages_of(accepted["id"])) == 2
    # ...as for a batch that was never scheduled, and a cancelled one
    _, plain = stack.batch(2)
    _, cancelled = stack.batch(2, scheduled_at=(soon + timedelta(minutes=5)).isoformat())
    stack.call("POST", f"/v1/batches/{cancelled['id']}/cancel")
    for batch_id in (plain["id"], cancelled["id"]):
        status, answer = stack.call("PATCH", f"/v1/batches/{batch_id}", later)
        assert (status, answer["error"]["code"]) == (409, "not_scheduled"), answer
    # ...and another client's batch, or no batch at all, is 404
    for batch_id in (str(uuid.uuid4()), "not-a-batch"):
        status, answer = stack.call("PATCH", f"/v1/batches/{batch_id}", later)
        assert (status, answer["error"]["code"]) == (404, "batch_not_found"), answer


def _move_while_the_scheduler_releases(stack: Stack, move: str) -> None:
    # A batch due in five minutes; the clock at 60 s before, so the next
    # scheduler pass releases it.
    old = stack.clock.now() + timedelta(minutes=5)
    _, accepted = stack.batch(4, scheduled_at=old.isoformat())
    batch_id = accepted["id"]
    records = PlannerRecords(stack, batch_id)
    records.seen = len(stack.planner.requests)
    stack.clock.moment = old - timedelta(seconds=60)
    new = old + timedelta(minutes=5) if move == "later" else old - timedelta(seconds=40)
    scheduler_services = stack.services_with(stack.planner)
    start = threading.Barrier(2)

    def release() -> SchedulerReport:
        start.wait()
        return stack.scheduler(scheduler_services)

    def patch() -> tuple[int, dict[str, Any]]:
        start.wait()
        return stack.call("PATCH", f"/v1/batches/{batch_id}", {"scheduled_at": new.isoformat()})

    # WHEN the scheduler and the move run at once
    with ThreadPoolExecutor(max_workers=2) as pool:
        released = pool.submit(release)
        patched = pool.submit(patch)
        released.result()
        status, answer = patched.result()
    assert status == 200, answer
    records.collect(stack.clock.now())
    # THEN, every record delivered at its time, it fires once, at its new time
    records.walk(max(old, new) + timedelta(minutes=12))
    assert records.fired_at is not None
    assert abs((records.fired_at - new).total_seconds()) <= 2, (records.fired_at, new)
    _exactly_once(stack, batch_id, 4)


@pytest.mark.parametrize("move", ["later", "earlier"])
def test_a_move_racing_the_scheduler_fires_the_batch_once_at_its_new_time(
    stack: Stack, move: str
) -> None:
    # GIVEN batches each moved at the very moment a scheduler pass releases
    # it (the two threads start together), many times over: whichever locks
    # the row first, the other sees its commit
    for _ in range(8):
        _move_while_the_scheduler_releases(stack, move)


def test_health_counts_a_scheduled_batch_left_waiting_past_its_time(stack: Stack) -> None:
    # GIVEN a batch scheduled for ten minutes from now, and no message scheduled
    _, accepted = stack.batch(
        2, scheduled_at=(stack.clock.now() + timedelta(minutes=10)).isoformat()
    )
    status, health = stack.call("GET", "/health")
    assert status == 200, health
    assert health["backlog"]["oldest_overdue_scheduled_seconds"] == 0.0
    # WHEN an hour passes with no scheduler running
    stack.clock.move(hours=1)
    # THEN health says it is 50 minutes overdue
    status, health = stack.call("GET", "/health")
    assert status == 200, health
    assert health["backlog"]["oldest_overdue_scheduled_seconds"] == 3000.0
    # ...while one released whose planner has not started is still overdue; once
    # planning began it is not
    stack.scheduler()
    status, health = stack.call("GET", "/health")
    assert status == 200, health
    assert health["backlog"]["oldest_overdue_scheduled_seconds"] == 3000.0
    assert stack.plan(accepted["id"]).done
    _, health = stack.call("GET", "/health")
    assert health["backlog"]["oldest_overdue_scheduled_seconds"] == 0.0


# --- schedules with a batch payload ---------------------------------------------------


def _schedule(**fields: Any) -> dict[str, Any]:
    return {
        "name": "weekly digest",
        "cron": "0 9 * * 1",
        "timezone": "Europe/Berlin",
        "batch": {"template": "welcome", "props": SHARED_PROPS, "recipients": recipients(3)},
        **fields,
    }


def test_a_schedule_with_a_batch_payload_runs_a_batch_linked_to_its_run(stack: Stack) -> None:
    # GIVEN a schedule whose payload is a batch of three, Mondays 09:00 in Berlin
    stack.clock.moment = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    status, created = stack.call("POST", "/v1/schedules", _schedule())
    assert status == 201, created
    assert created["send"] is None
    assert [r["to"] for r in created["batch"]["recipients"]] == [
        "user0@example.com",
        "user1@example.com",
        "user2@example.com",
    ]
    assert created["next_run_at"] == "2026-12-07T08:00:00Z"

    # WHEN the scheduler passes at its fire time
    stack.clock.moment = datetime(2026, 12, 7, 8, 0, 5, tzinfo=UTC)
    report = stack.scheduler()
    # THEN the run created one ordinary bulk batch, handed to the planner now
    assert report.runs_started == 1
    status, page = stack.call("GET", f"/v1/schedules/{created['id']}/runs")
    assert status == 200, page
    [run] = page["runs"]
    assert (run["status"], run["message_ids"]) == ("sent", [])
    batch_id = run["batch_id"]
    assert run["batch"] == {
        "status": "accepted",
        "total": 3,
        "sent": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert stack.planner.requests == [(uuid.UUID(batch_id), 0)]
    assert stack.rows(
        "SELECT schedule_id, schedule_run_id FROM batches WHERE id = :b", b=uuid.UUID(batch_id)
    ) == [(uuid.UUID(created["id"]), uuid.UUID(run["id"]))]
    # ...which plans like any batch, and the runs list follows its outcome
    assert stack.plan(batch_id).done
    assert len(stack.messages_of(batch_id)) == 3
    _, page = stack.call("GET", f"/v1/schedules/{created['id']}/runs")
    assert page["runs"][0]["batch"]["status"] == "sending"
    # ...and a run now makes another batch
    status, now_run = stack.call("POST", f"/v1/schedules/{created['id']}/run")
    assert (status, now_run["status"]) == (201, "sent"), now_run
    assert now_run["batch_id"] not in (None, batch_id)


def test_an_invalid_batch_payload_is_refused_at_creation(stack: Stack) -> None:
    people = recipients(3)
    refusals: list[tuple[dict[str, Any], str]] = [
        # an unknown template
        ({"batch": {"template": "nope", "recipients": people}}, "unknown_template"),
        # a bad address (a posted batch would record it; a schedule is refused now)
        (
            {
                "batch": {
                    "template": "welcome",
                    "props": SHARED_PROPS,
                    "recipients": [people[0], {"to": "not-an-address"}],
                }
            },
            "validation_error",
        ),
        # a recipient without a prop the template needs
        (
            {
                "batch": {
                    "template": "welcome",
                    "props": SHARED_PROPS,
                    "recipients": [people[0], {"to": "bo@example.com"}],
                }
            },
            "missing_prop",
        ),
        # an upload (a schedule lists its recipients), and a time of its own
        ({"batch": {"template": "welcome", "recipients_upload": True}}, "validation_error"),
        (
            {
                "batch": {
                    "template": "welcome",
                    "props": SHARED_PROPS,
                    "recipients": people,
                    "scheduled_at": "2026-12-24T09:00:00+01:00",
                }
            },
            "validation_error",
        ),
        # both payloads, or neither
        ({"send": WELCOME_BODY}, "validation_error"),
        ({"batch": None}, "validation_error"),
    ]
    for fields, code in refusals:
        status, body = stack.call("POST", "/v1/schedules", _schedule(**fields))
        assert (status, body["error"]["code"]) == (422, code), (fields, body)
    status, body = stack.call(
        "POST",
        "/v1/schedules",
        _schedule(
            batch={
                "template": "welcome",
                "props": SHARED_PROPS,
                "recipients": [people[0], {"to": "not-an-address"}],
            }
        ),
    )
    assert body["error"]["details"][0]["field"] == "recipients.1.to"
    status, body = stack.call(
        "POST",
        "/v1/schedules",
        _schedule(
            batch={
                "template": "welcome",
                "props": SHARED_PROPS,
                "recipients": [people[0], {"to": "bo@example.com"}],
            }
        ),
    )
    assert body["error"]["message"].startswith("recipients.1: ")
    # THEN nothing was written
    assert stack.rows("SELECT id FROM schedules") == []


def test_patch_swaps_a_send_payload_for_a_batch_one(stack: Stack) -> None:
    status, created = stack.call("POST", "/v1/schedules", _schedule(batch=None, send=WELCOME_BODY))
    assert (status, created["batch"]) == (201, None), created
    batch = {"template": "welcome", "props": SHARED_PROPS, "recipients": recipients(2)}
    status, patched = stack.call("PATCH", f"/v1/schedules/{created['id']}", {"batch": batch})
    assert status == 200, patched
    assert (patched["send"], len(patched["batch"]["recipients"])) == (None, 2)
    # ...a bad one is refused and changes nothing
    status, refused = stack.call(
        "PATCH", f"/v1/schedules/{created['id']}", {"batch": {**batch, "template": "nope"}}
    )
    assert (status, refused["error"]["code"]) == (422, "unknown_template")
    status, both = stack.call(
        "PATCH", f"/v1/schedules/{created['id']}", {"batch": batch, "send": WELCOME_BODY}
    )
    assert status == 422, both
    _, view = stack.call("GET", f"/v1/schedules/{created['id']}")
    assert (view["send"], len(view["batch"]["recipients"])) == (None, 2)


def test_a_schedules_batch_run_is_charged_per_recipient_and_fails_when_it_does_not_fit(
    stack: Stack,
) -> None:
    # GIVEN a schedule whose payload is a batch of three
    client = stack.client.client
    period = QuotaPeriod.containing(datetime.now(UTC))
    status, created = stack.call("POST", "/v1/schedules", _schedule())
    assert status == 201, created
    assert stack.services.quota.read(client.id, period) in (None, 0)

    # WHEN it runs THEN its three recipients count against the quota, as POST /v1/batches's
    status, first = stack.call("POST", f"/v1/schedules/{created['id']}/run")
    assert (status, first["status"]) == (201, "sent"), first
    assert stack.services.quota.read(client.id, period) == 3

    # WHEN the quota then has room for two only, and it runs again
    room = client.quota_limit - 3 - 2
    assert stack.services.quota.take_up_to(client.id, period, client.quota_limit, room) is not None
    status, second = stack.call("POST", f"/v1/schedules/{created['id']}/run")
    # THEN the run fails with the quota's code, no batch is written and nothing more is counted
    assert status == 201, second
    assert (second["status"], second["batch_id"]) == ("failed", None)
    assert second["detail"]["code"] == "quota_exceeded"
    assert stack.rows("SELECT count(*) FROM batches") == [(1,)]
    assert stack.services.quota.read(client.id, period) == client.quota_limit - 2
