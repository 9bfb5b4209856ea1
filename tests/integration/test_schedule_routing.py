"""A recurring schedule's queue and SMTP relay (issues 18 and 20), as /v1/send has them.

Real PostgreSQL and Redis, moto's SQS with one queue per priority band, the
conftest SMTP sink as the client's relays. A schedule's payload naming a
queue and a relay is checked at creation as /v1/send checks it (nothing
written on refusal), and each run goes through that queue's band (held while
it is paused) and that relay; a queue or relay gone since fails the run with
its code while the schedule goes on. Time is a clock the tests move.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mailroom.adapters.db.unit_of_work import Database
from mailroom.bootstrap import bootstrap
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.queues import queue_routes
from mailroom.entrypoints.scheduler import policy_of
from mailroom.entrypoints.schedules import schedule_routes, schedule_sender
from mailroom.entrypoints.smtp_configs import smtp_config_routes
from mailroom.services.scheduler import SchedulerReport, scheduler_pass
from tests.integration.conftest import SmtpSink
from tests.integration.test_queue_bands import BANDS, BandStack, only_on, sorted_bands
from tests.integration.test_queues import WELCOME
from tests.integration.test_scheduling import MovableClock

pytestmark = pytest.mark.integration

SEND = json.loads(WELCOME["body"])
# The welcome template's props, shared by a batch payload (each recipient names itself).
SHARED_PROPS = {key: value for key, value in SEND["props"].items() if key != "first_name"}


class ScheduleStack(BandStack):
    """test_queue_bands' three bands and relays, with the schedule routes and a movable clock."""

    def __init__(self, database: Database, redis_url: str, smtp_port: int) -> None:
        super().__init__(database, redis_url, smtp_port)
        self.clock = MovableClock(datetime.now(UTC).replace(microsecond=0))
        self.services = bootstrap(self.settings, clock=self.clock)
        provider = lambda: self.services  # noqa: E731 - the routes take a provider
        self.api = create_api(
            [
                send_routes(provider),
                status_routes(provider),
                queue_routes(provider),
                smtp_config_routes(provider),
                schedule_routes(provider),
            ],
            max_request_bytes=lambda: self.settings.batch_max_request_bytes,
        )

    def relay(self, name: str, smtp_port: int) -> str:
        status, body = self.call(
            "POST",
            "/v1/smtp-configs",
            {"name": name, "host": "127.0.0.1", "port": smtp_port, "security": "none"},
        )
        assert status == 201, body
        return str(body["id"])

    def schedule(self, **payload: Any) -> tuple[int, dict[str, Any]]:
        """A schedule firing every minute, its send payload the welcome send with ``payload``."""
        return self.call("POST", "/v1/schedules", schedule_body(send={**SEND, **payload}))

    def tick(self) -> SchedulerReport:
        """A minute later, one scheduler pass."""
        self.clock.move(minutes=1)
        return scheduler_pass(
            self.services.uow(),
            self.services.queue,
            schedule_sender(self.services),
            policy=policy_of(self.services),
            clock=self.clock,
        )

    def runs(self, schedule_id: str) -> list[dict[str, Any]]:
        status, page = self.call("GET", f"/v1/schedules/{schedule_id}/runs")
        assert status == 200, page
        return list(page["runs"])

    def written(self) -> list[Any]:
        """What a refused schedule must not have left: schedules, runs, queues, messages."""
        return self.sql(
            "SELECT (SELECT count(*) FROM schedules), (SELECT count(*) FROM schedule_runs), "
            "(SELECT count(*) FROM queues), (SELECT count(*) FROM messages)"
        )


def schedule_body(**payload: Any) -> dict[str, Any]:
    return {"name": "digest", "cron": "* * * * *", "timezone": "Europe/Berlin", **payload}


def batch_payload(**fields: Any) -> dict[str, Any]:
    people = [{"to": f"user{i}@example.com", "props": {"first_name": f"U{i}"}} for i in range(2)]
    return {"template": "welcome", "props": SHARED_PROPS, "recipients": people, **fields}


@pytest.fixture
def stack(database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink) -> ScheduleStack:
    return ScheduleStack(database, redis_url, smtp_sink.port)


def test_a_payload_naming_an_active_relay_and_an_existing_queue_is_accepted(
    stack: ScheduleStack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a client with a relay and a high-priority queue
    stack.relay("transactional", smtp_sink.port)
    stack.create("urgent", priority=10)
    # WHEN it schedules a send and a batch naming both
    status, made = stack.schedule(queue="urgent", smtp_config="transactional")
    # THEN each is created, keeping both names for its runs
    assert status == 201, made
    assert (made["send"]["queue"], made["send"]["smtp_config"]) == ("urgent", "transactional")
    status, batch = stack.call(
        "POST",
        "/v1/schedules",
        schedule_body(batch=batch_payload(queue="urgent", smtp_config="transactional")),
    )
    assert status == 201, batch
    assert (batch["batch"]["queue"], batch["batch"]["smtp_config"]) == ("urgent", "transactional")
    # AND a PATCH naming them is accepted too
    status, plain = stack.schedule()
    assert status == 201, plain
    status, changed = stack.call(
        "PATCH",
        f"/v1/schedules/{plain['id']}",
        {"send": {**SEND, "queue": "urgent", "smtp_config": "transactional"}},
    )
    assert status == 200, changed
    assert changed["send"]["queue"] == "urgent"


# (fields, expected status, code, the detail /v1/send gives for that field)
REFUSALS = [
    pytest.param(
        {"smtp_config": "no-such-relay"},
        422,
        "unknown_smtp_config",
        "unknown SMTP configuration",
        id="unknown-relay",
    ),
    pytest.param(
        {"smtp_config": "switched-off"},
        422,
        "unknown_smtp_config",
        "inactive SMTP configuration",
        id="inactive-relay",
    ),
    pytest.param({"queue": "nope"}, 422, "unknown_queue", "unknown queue", id="unknown-queue"),
    pytest.param({"queue": "closing"}, 409, "queue_draining", None, id="draining-queue"),
]


@pytest.mark.parametrize("kind", ["send", "batch"])
@pytest.mark.parametrize(("fields", "status", "code", "detail"), REFUSALS)
def test_a_payload_naming_a_bad_relay_or_queue_is_refused_writing_nothing(
    stack: ScheduleStack,
    smtp_sink: SmtpSink,
    kind: str,
    fields: dict[str, Any],
    status: int,
    code: str,
    detail: str | None,
) -> None:
    # GIVEN an inactive relay and a draining queue
    off = stack.relay("switched-off", smtp_sink.port)
    stack.call("PATCH", f"/v1/smtp-configs/{off}", {"active": False})
    closing = stack.create("closing")
    assert stack.call("POST", f"/v1/queues/{closing['id']}/drain")[0] == 200
    before = stack.written()
    # WHEN a schedule's payload names the bad one
    payload = {**SEND, **fields} if kind == "send" else batch_payload(**fields)
    answer_status, answer = stack.call("POST", "/v1/schedules", schedule_body(**{kind: payload}))
    # THEN it is refused as /v1/send refuses it, for that relay or queue
    assert (answer_status, answer["error"]["code"]) == (status, code), answer
    field = next(iter(fields))
    assert any(
        d.get("field") == field and (detail is None or d.get("message") == detail)
        for d in answer["error"]["details"]
    ), answer
    # AND nothing was written: no schedule, no run, no queue (not even the default one)
    assert stack.written() == before


def test_a_patch_naming_a_bad_relay_or_queue_changes_nothing(
    stack: ScheduleStack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a schedule, and a draining queue
    status, made = stack.schedule()
    assert status == 201, made
    closing = stack.create("closing")
    stack.call("POST", f"/v1/queues/{closing['id']}/drain")
    # WHEN a PATCH names an unknown relay, an unknown queue, the draining queue
    for fields, expected in (
        ({"smtp_config": "no-such-relay"}, (422, "unknown_smtp_config")),
        ({"queue": "nope"}, (422, "unknown_queue")),
        ({"queue": "closing"}, (409, "queue_draining")),
    ):
        status, body = stack.call(
            "PATCH",
            f"/v1/schedules/{made['id']}",
            {"name": "renamed", "send": {**SEND, **fields}},
        )
        # THEN it is refused and the schedule is as it was
        assert (status, body["error"]["code"]) == expected, (fields, body)
        assert stack.call("GET", f"/v1/schedules/{made['id']}")[1] == made


def test_a_run_goes_on_its_queues_band_through_its_relay(
    stack: ScheduleStack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a priority-10 queue sending through one relay, and a second relay
    queue_relay = stack.relay("queue-relay", smtp_sink.port)
    named_relay = stack.relay("named-relay", smtp_sink.port)
    urgent = stack.create("urgent", priority=10, smtp_config_id=queue_relay)
    # AND a schedule naming the queue and the second relay, one naming the queue only
    both = stack.schedule(queue="urgent", smtp_config="named-relay")[1]["id"]
    queue_only = stack.schedule(queue="urgent")[1]["id"]
    # WHEN the scheduler runs them
    report = stack.tick()
    # THEN each run sent one message, both on the high band in the client's group
    assert (report.runs_started, report.runs_failed) == (2, 0)
    runs = {sid: stack.runs(sid) for sid in (both, queue_only)}
    assert [[(r["status"], len(r["message_ids"])) for r in rs] for rs in runs.values()] == [
        [("sent", 1)],
        [("sent", 1)],
    ]
    ids = {sid: rs[0]["message_ids"][0] for sid, rs in runs.items()}
    assert sorted_bands(stack.everywhere()) == only_on("high", list(ids.values()), stack.client_id)
    # AND each carries its relay: the one the payload names over its queue's, as /v1/send
    rows = {
        row[0]: (row[1], row[2])
        for row in stack.sql(
            "SELECT id::text, options->>'smtp_config_id', queue_id::text FROM messages"
        )
    }
    assert rows == {
        ids[both]: (named_relay, urgent["id"]),
        ids[queue_only]: (queue_relay, urgent["id"]),
    }


def test_a_run_naming_a_paused_queue_is_sent_and_its_message_held(
    stack: ScheduleStack,
) -> None:
    # GIVEN a schedule naming a priority-2 queue, which is then paused
    news = stack.create("news", priority=2)
    schedule_id = stack.schedule(queue="news")[1]["id"]
    stack.call("POST", f"/v1/queues/{news['id']}/pause")
    # WHEN the scheduler runs it
    stack.tick()
    # THEN the run reads sent with its message, which is held and on no band
    [run] = stack.runs(schedule_id)
    assert (run["status"], len(run["message_ids"])) == ("sent", 1), run
    message_id = run["message_ids"][0]
    assert stack.status_of(message_id) == "held"
    assert [stack.depth(band) for band in BANDS] == [0, 0, 0]
    # WHEN the queue is resumed
    status, resumed = stack.call("POST", f"/v1/queues/{news['id']}/resume")
    # THEN its release puts the message on the queue's (low) band
    assert (status, resumed["released"]) == (200, 1), resumed
    assert sorted_bands(stack.everywhere()) == only_on("low", [message_id], stack.client_id)


def test_a_relay_or_queue_gone_since_fails_the_run_with_its_code_and_the_schedule_goes_on(
    stack: ScheduleStack, smtp_sink: SmtpSink
) -> None:
    # GIVEN one schedule naming a relay and one naming a queue
    relay_id = stack.relay("transactional", smtp_sink.port)
    queue = stack.create("urgent", priority=10)
    by_relay = stack.schedule(smtp_config="transactional")[1]["id"]
    by_queue = stack.schedule(queue="urgent")[1]["id"]
    # AND their first runs, sent through both (the queue emptied, so it may be deleted)
    assert stack.tick().runs_started == 2
    assert stack.work_all() == 2
    assert len(smtp_sink.received) == 2
    assert stack.sql("SELECT provider FROM messages WHERE options ? 'smtp_config_id'") == [
        (f"smtp-config:{relay_id}",)
    ]
    # WHEN the relay and the queue are deleted, and the scheduler runs twice more
    assert stack.call("DELETE", f"/v1/smtp-configs/{relay_id}")[0] == 200
    assert stack.call("DELETE", f"/v1/queues/{queue['id']}")[0] == 200
    first = stack.tick()
    second = stack.tick()
    # THEN those runs failed with the code a send would get, and nothing more was sent
    assert (first.runs_failed, second.runs_failed) == (2, 2)
    for schedule_id, code in ((by_relay, "unknown_smtp_config"), (by_queue, "unknown_queue")):
        runs = stack.runs(schedule_id)  # newest first
        assert [(r["status"], r["detail"].get("code")) for r in runs] == [
            ("failed", code),
            ("failed", code),
            ("sent", None),
        ]
        assert [len(r["message_ids"]) for r in runs] == [0, 0, 1]
        # AND the schedule goes on: still active, its next run a minute after the last
        schedule = stack.call("GET", f"/v1/schedules/{schedule_id}")[1]
        assert schedule["state"] == "active"
        assert datetime.fromisoformat(schedule["next_run_at"]) > stack.clock.now()
    assert stack.sql("SELECT count(*) FROM messages") == [(2,)]
    assert [stack.depth(band) for band in BANDS] == [0, 0, 0]
