"""Outbound webhooks end to end on real PostgreSQL, moto's SQS and a real HTTP receiver.

Every delivery is checked with ``standardwebhooks`` (the spec's reference
library from PyPI), never with Mailroom's own signing code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailroom.adapters import tracing
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.adapters.webhook_queue import SqsWebhookQueue, delivery_ids_of
from mailroom.adapters.webhook_sender import Urllib3WebhookSender
from mailroom.domain.errors import UnsafeWebhookUrl, WebhookLimitReached
from mailroom.domain.model import EventType, Message
from mailroom.domain.outbound_webhooks import MAX_ENDPOINTS_PER_CLIENT, RETRY_SCHEDULE
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.domain.tenancy import SYSTEM_ACTOR
from mailroom.services import outbound_webhooks as webhooks
from tests.integration.conftest import stored_client
from tests.webhook_receiver import Behaviour, Receiver

pytestmark = pytest.mark.integration

KEYRING = SecretKeyring.from_setting(SecretKeyring.generate_setting())
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def webhook_queue_url(aws: str) -> str:
    sqs = boto3.client("sqs", region_name="us-east-1")
    return str(
        sqs.create_queue(
            QueueName=f"webhooks-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "2"}
        )["QueueUrl"]
    )


@dataclass
class Stack:
    database: Database
    queue_url: str
    clock: Clock
    dispatcher: webhooks.Dispatcher

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.database)

    @property
    def queue(self) -> SqsWebhookQueue:
        return SqsWebhookQueue(self.queue_url, "us-east-1")

    def relay(self) -> webhooks.RelayReport:
        return webhooks.relay(self.uow(), self.queue, now=self.clock())

    def drain(self) -> int:
        """Feed every queued message to the dispatcher, as the SQS trigger would."""
        sqs = boto3.client("sqs", region_name="us-east-1")
        handled = 0
        while True:
            answer = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = answer.get("Messages", [])
            if not messages:
                return handled
            for message in messages:
                self.dispatcher.dispatch(delivery_ids_of(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                handled += 1

    def deliver(self) -> None:
        self.relay()
        self.drain()


def make_stack(
    database: Database, queue_url: str, *, allow_private: bool = True, **sender: Any
) -> Stack:
    clock = Clock()
    dispatcher = webhooks.Dispatcher(
        uow=lambda: SqlUnitOfWork(database),
        sender=Urllib3WebhookSender(allow_private=allow_private, **sender),
        queue=SqsWebhookQueue(queue_url, "us-east-1"),
        keyring=KEYRING,
        allow_private=allow_private,
        clock=clock,
        rng=random.Random(7),
        # Tests wait for every lane, so what they check has happened.
        batch_wait_seconds=60,
    )
    return Stack(database, queue_url, clock, dispatcher)


@pytest.fixture
def stack(database: Database, webhook_queue_url: str) -> Stack:
    return make_stack(database, webhook_queue_url)


def endpoint(
    stack: Stack, client_id: uuid.UUID, url: str, events: list[str] | None = None
) -> webhooks.CreatedEndpoint:
    return webhooks.create_endpoint(
        stack.uow(),
        KEYRING,
        client_id,
        url=url,
        events=events,
        description=None,
        allow_private=True,
        actor=SYSTEM_ACTOR,
    )


def message_with_events(
    stack: Stack, client_id: uuid.UUID, *events: tuple[EventType | str, dict[str, Any]]
) -> Message:
    message = Message(
        id=uuid.uuid4(),
        client_id=client_id,
        trace_id="t",
        template_name="welcome",
        from_address="noreply@example.com",
        to=["ada@example.com"],
        metadata={"order": "42", "tags": ["welcome"]},
    )
    with stack.uow() as uow:
        uow.add_accepted(message, {}, [("ada@example.com", "to")])
        uow.commit()
    for event_type, detail in events:
        # Written with plain SQL, as a code path this module never heard of would.
        sql(
            stack.database,
            "INSERT INTO message_events (message_id, type, detail) "
            "VALUES (:m, :t, CAST(:d AS jsonb))",
            m=message.id,
            t=str(event_type),
            d=json.dumps(detail),
        )
    return message


def sql(database: Database, statement: str, **params: Any) -> list[Any]:
    with database.engine.begin() as connection:
        result = connection.execute(text(statement), params)
        return list(result) if result.returns_rows else []


def in_event_order(received: list[Any]) -> list[Any]:
    """Deliveries in one batch travel in parallel: arrival order is not event order."""
    return sorted(received, key=lambda r: int(r.headers["webhook-id"].removeprefix("evt_")))


def verified(secret: str, received: Any) -> dict[str, Any]:
    body = Webhook(secret).verify(received.body, received.headers)
    assert isinstance(body, dict)
    return body


def test_every_event_any_code_writes_is_delivered_signed_and_verifies(
    stack: Stack, receiver: Receiver
) -> None:
    # GIVEN a client with an endpoint for every type
    client = stored_client(stack.database)
    created = endpoint(stack, client.id, receiver.url())
    assert created.secret.startswith("whsec_")
    # WHEN a message is accepted and sent, a retry is recorded, and a type
    # written by SQL the webhook code never saw (bounced) is inserted
    message = message_with_events(
        stack,
        client.id,
        (EventType.ATTEMPT_FAILED, {"error": "x"}),
        (EventType.SENT, {"provider": "smtp"}),
        ("bounced", {"recipient": "ada@example.com", "bounce_type": "hard", "diagnostic": "550"}),
    )
    stack.deliver()
    # THEN three deliveries arrive (the retry is bookkeeping), each verified
    # by the reference library, in order, with the message's data
    bodies = [verified(created.secret, r) for r in in_event_order(receiver.received)]
    assert [b["type"] for b in bodies] == ["email.queued", "email.sent", "email.bounced"]
    bounced = bodies[2]["data"]
    assert bounced["message_id"] == str(message.id)
    assert bounced["recipient"] == "ada@example.com"
    assert bounced["bounce_type"] == "hard"
    assert bounced["metadata"] == {"order": "42", "tags": ["welcome"]}
    assert bounced["tags"] == ["welcome"]
    assert "mode" not in bounced
    assert all(r.headers["webhook-id"].startswith("evt_") for r in receiver.received)


def test_a_tampered_body_or_a_stale_timestamp_fails_verification(
    stack: Stack, receiver: Receiver
) -> None:
    # GIVEN one delivered event
    client = stored_client(stack.database)
    created = endpoint(stack, client.id, receiver.url())
    message_with_events(stack, client.id)
    stack.deliver()
    (received,) = receiver.received
    # WHEN its body is changed by one byte, or it is checked much later
    tampered = received.body.replace(b"email.queued", b"email.queuee")
    # THEN the reference library refuses both
    with pytest.raises(WebhookVerificationError):
        Webhook(created.secret).verify(tampered, received.headers)
    stale = {
        **received.headers,
        "webhook-timestamp": str(int(received.headers["webhook-timestamp"]) - 3600),
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(created.secret).verify(received.body, stale)
    # AND a wrong secret fails too
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 44).verify(received.body, received.headers)


def test_during_a_rotation_both_secrets_verify_and_afterwards_only_the_new(
    stack: Stack, receiver: Receiver
) -> None:
    # GIVEN an endpoint whose secret is rotated with a grace period
    client = stored_client(stack.database)
    old = endpoint(stack, client.id, receiver.url())
    new = webhooks.rotate_secret(
        stack.uow(),
        KEYRING,
        client.id,
        old.endpoint.id,
        grace=timedelta(hours=1),
        actor=SYSTEM_ACTOR,
    )
    # WHEN an event is delivered inside the grace period
    message_with_events(stack, client.id)
    stack.deliver()
    (during,) = receiver.received
    # THEN it carries two signatures and either secret verifies it
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    verified(old.secret, during)
    verified(new.secret, during)
    # WHEN the grace period is over (ended by hand: the reference library
    # checks timestamps against the real clock)
    sql(
        stack.database,
        "UPDATE webhook_endpoints SET previous_secret_expires_at = now() - interval '1 s'",
    )
    message_with_events(stack, client.id)
    stack.deliver()
    after = receiver.received[-1]
    # THEN only the new secret verifies
    verified(new.secret, after)
    with pytest.raises(WebhookVerificationError):
        verified(old.secret, after)


def test_test_mode_events_say_so_and_filters_hold(stack: Stack, receiver: Receiver) -> None:
    # GIVEN an endpoint subscribed to email.sent only
    client = stored_client(stack.database)
    created = endpoint(stack, client.id, receiver.url(), ["email.sent"])
    message = message_with_events(stack, client.id, (EventType.SENT, {}))
    sql(stack.database, "UPDATE messages SET is_test = true WHERE id = :id", id=message.id)
    message_with_events(stack, client.id)  # a live one, queued only
    # WHEN the test message is sent again (a second sent event)
    with stack.uow() as uow:
        uow.messages.append_event(message.id, EventType.SENT, {})
        uow.commit()
    stack.deliver()
    # THEN only email.sent arrives, and the test message's says mode test
    bodies = [verified(created.secret, r) for r in in_event_order(receiver.received)]
    assert [b["type"] for b in bodies] == ["email.sent", "email.sent"]
    assert "mode" not in bodies[0]["data"]
    assert bodies[1]["data"]["mode"] == "test"


def test_retries_follow_the_schedule_then_give_up(stack: Stack, receiver: Receiver) -> None:
    # GIVEN an endpoint that always answers 500, and a clock we move
    client = stored_client(stack.database)
    receiver.behaviour["/down"] = Behaviour(status=500)
    created = endpoint(stack, client.id, receiver.url("/down"))
    message_with_events(stack, client.id)
    stack.relay()
    ((delivery_id,),) = sql(stack.database, "SELECT id FROM webhook_deliveries")
    waits = []
    # WHEN each attempt is made when it falls due
    for _ in RETRY_SCHEDULE:
        report = stack.dispatcher.dispatch([delivery_id])
        assert report.claimed == 1
        (row,) = sql(
            stack.database,
            "SELECT status, next_attempt_at FROM webhook_deliveries WHERE id = :id",
            id=delivery_id,
        )
        if row.next_attempt_at is None:
            break
        waits.append(row.next_attempt_at - stack.clock.now)
        # Not due yet: a dispatcher given it early does nothing.
        assert stack.dispatcher.dispatch([delivery_id]).claimed == 0
        stack.clock.now = row.next_attempt_at
    # THEN the waits are 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (+-10 %), and
    # after the eighth attempt the delivery has failed for good
    assert len(waits) == len(RETRY_SCHEDULE) - 1
    for wait, planned in zip(waits, RETRY_SCHEDULE[1:], strict=True):
        assert planned * 0.9 <= wait <= planned * 1.1 + timedelta(milliseconds=1)
    assert row.status == "failed"
    attempts = webhooks.list_attempts(stack.uow(), client.id, created.endpoint.id)
    assert len(attempts) == len(RETRY_SCHEDULE)
    assert all(a.status_code == 500 for a in attempts)
    assert len(receiver.received) == len(RETRY_SCHEDULE)
    # AND every retry carried the same webhook-id
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


def test_retry_after_is_honoured(stack: Stack, receiver: Receiver) -> None:
    # GIVEN an endpoint answering 429 with Retry-After: 120
    client = stored_client(stack.database)
    receiver.behaviour["/busy"] = Behaviour(status=429, headers={"Retry-After": "120"})
    endpoint(stack, client.id, receiver.url("/busy"))
    message_with_events(stack, client.id)
    # WHEN it is delivered once
    stack.deliver()
    # THEN the next attempt waits 120 s, not the schedule's 5 s
    ((due,),) = sql(stack.database, "SELECT next_attempt_at FROM webhook_deliveries")
    assert due - stack.clock.now >= timedelta(seconds=120)


def test_410_disables_at_once_and_the_client_is_told(stack: Stack, receiver: Receiver) -> None:
    # GIVEN one endpoint that answers 410 and another that works
    client = stored_client(stack.database)
    receiver.behaviour["/gone"] = Behaviour(status=410)
    gone = endpoint(stack, client.id, receiver.url("/gone"))
    other = endpoint(stack, client.id, receiver.url("/ok"))
    message_with_events(stack, client.id)
    # WHEN the event is delivered, and the relay runs again
    stack.deliver()
    stack.deliver()
    # THEN the 410 endpoint is disabled after one attempt and the other hears of it
    disabled = webhooks.get_endpoint(stack.uow(), client.id, gone.endpoint.id)
    assert disabled.disabled_at is not None
    assert "410" in (disabled.disabled_reason or "")
    to_other = [
        verified(other.secret, r) for r in in_event_order(receiver.received) if r.path == "/ok"
    ]
    assert [b["type"] for b in to_other] == ["email.queued", "webhook.endpoint_disabled"]
    assert to_other[1]["data"]["endpoint_id"] == str(gone.endpoint.id)
    assert sum(1 for r in receiver.received if r.path == "/gone") == 1
    # AND new events are not sent to it
    message_with_events(stack, client.id)
    stack.deliver()
    assert sum(1 for r in receiver.received if r.path == "/gone") == 1


def test_five_days_of_failures_disable_the_endpoint(stack: Stack, receiver: Receiver) -> None:
    # GIVEN an endpoint that fails every attempt
    client = stored_client(stack.database)
    receiver.behaviour["/down"] = Behaviour(status=502)
    down = endpoint(stack, client.id, receiver.url("/down"))
    message_with_events(stack, client.id)
    stack.deliver()
    assert webhooks.get_endpoint(stack.uow(), client.id, down.endpoint.id).enabled
    # WHEN it still fails five days later
    stack.clock.now += timedelta(days=5, seconds=1)
    message_with_events(stack, client.id)
    stack.deliver()
    # THEN it is disabled, and the feed says so
    state = webhooks.get_endpoint(stack.uow(), client.id, down.endpoint.id)
    assert state.disabled_at is not None
    stack.relay()
    page = webhooks.feed(stack.uow(), client.id, after=None, types=None, limit=100)
    assert page.events[-1][1]["type"] == "webhook.endpoint_disabled"


def test_a_name_resolving_to_loopback_is_refused_after_resolution(
    database: Database, webhook_queue_url: str, receiver: Receiver
) -> None:
    # GIVEN the production guard, and a public-looking name whose DNS answer is 127.0.0.1
    resolved = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    stack = make_stack(database, webhook_queue_url, allow_private=False, resolver=resolver)
    client = stored_client(database)
    created = webhooks.create_endpoint(
        stack.uow(),
        KEYRING,
        client.id,
        url=f"https://rebind.example.com:{receiver.port}/hook",
        events=None,
        description=None,
        allow_private=False,
        actor=SYSTEM_ACTOR,
    )
    message_with_events(stack, client.id)
    # WHEN the event is dispatched
    stack.deliver()
    # THEN nothing reached the receiver and the attempt says why
    assert resolved == ["rebind.example.com"]
    assert receiver.received == []
    (attempt,) = webhooks.list_attempts(stack.uow(), client.id, created.endpoint.id)
    assert attempt.status_code is None
    assert "127.0.0.1" in (attempt.error or "")


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "https://user:pw@hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://10.1.2.3/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "https://[::ffff:10.0.0.1]/x",
        "https://localhost/x",
        "ftp://hooks.example.com/x",
        "https:///nohost",
    ],
)
def test_unsafe_urls_are_refused_at_creation(stack: Stack, url: str) -> None:
    client = stored_client(stack.database)
    with pytest.raises(UnsafeWebhookUrl):
        webhooks.create_endpoint(
            stack.uow(),
            KEYRING,
            client.id,
            url=url,
            events=None,
            description=None,
            allow_private=False,
            actor=SYSTEM_ACTOR,
        )
    assert webhooks.list_endpoints(stack.uow(), client.id) == []


def test_more_endpoints_than_the_limit_are_refused(stack: Stack) -> None:
    client = stored_client(stack.database)
    for n in range(MAX_ENDPOINTS_PER_CLIENT):
        endpoint(stack, client.id, f"https://hooks{n}.example.com/x")
    with pytest.raises(WebhookLimitReached):
        endpoint(stack, client.id, "https://one-more.example.com/x")


def test_bad_receivers_fail_their_own_attempts_and_harm_no_other_endpoint(
    database: Database, webhook_queue_url: str, receiver: Receiver
) -> None:
    # GIVEN endpoints that redirect, answer 10 MB, answer after the timeout,
    # dribble their answer a byte at a time, and one that works; the timeout
    # is shortened to keep the test quick
    stack = make_stack(database, webhook_queue_url, timeout_seconds=1.0)
    client = stored_client(database)
    receiver.behaviour["/redirect"] = Behaviour(
        status=302, headers={"Location": receiver.url("/ok")}
    )
    receiver.behaviour["/huge"] = Behaviour(status=200, body=b"x" * 10_000_000)
    receiver.behaviour["/slow"] = Behaviour(delay_seconds=3)
    # About 8 s for its answer, a byte every 0.2 s: no single read times out.
    receiver.behaviour["/dribble"] = Behaviour(dribble_seconds=0.2)
    receiver.behaviour["/nul"] = Behaviour(status=500, body=b"\x00\xff nul and not UTF-8")
    created = {
        p: endpoint(stack, client.id, receiver.url(p))
        for p in ["/redirect", "/huge", "/slow", "/dribble", "/nul", "/ok"]
    }
    message_with_events(stack, client.id)
    # WHEN the event is dispatched
    stack.deliver()

    # THEN the redirect was not followed and failed, the huge answer kept its
    # first 4 KB, the slow one timed out, and the good endpoint got its event
    def only(path: str) -> Any:
        (attempt,) = webhooks.list_attempts(stack.uow(), client.id, created[path].endpoint.id)
        return attempt

    assert only("/redirect").status_code == 302
    assert only("/redirect").error == "redirect not followed"
    assert sum(1 for r in receiver.received if r.path == "/ok") == 1
    assert only("/huge").status_code == 200
    assert len(only("/huge").response_excerpt) == 4096
    assert only("/slow").status_code is None
    assert only("/slow").error == "timeout"
    # AND the dribbling one ran out of time as a whole attempt
    assert only("/dribble").status_code is None
    assert only("/dribble").error == "timeout"
    assert only("/dribble").latency_ms < 5000
    assert only("/ok").status_code == 200
    assert only("/nul").status_code == 500
    assert only("/nul").response_excerpt == "\ufffd\ufffd nul and not UTF-8"


def test_replay_and_manual_retry_resend_with_the_same_ids(stack: Stack, receiver: Receiver) -> None:
    # GIVEN two events delivered to an endpoint
    client = stored_client(stack.database)
    created = endpoint(stack, client.id, receiver.url())
    message_with_events(stack, client.id, (EventType.SENT, {}))
    stack.deliver()
    first = sorted(r.headers["webhook-id"] for r in receiver.received)
    # WHEN the last hour is replayed
    count = webhooks.replay(
        stack.uow(),
        stack.queue,
        client.id,
        created.endpoint.id,
        start=stack.clock.now - timedelta(hours=1),
        end=stack.clock.now + timedelta(minutes=1),
        actor=SYSTEM_ACTOR,
    )
    stack.drain()
    # THEN both arrive again, same ids, still verified
    assert count == 2
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(first + first)
    for r in receiver.received:
        verified(created.secret, r)
    # AND a manual retry of one delivery sends that event once more
    attempt = webhooks.list_attempts(stack.uow(), client.id, created.endpoint.id)[0]
    webhooks.retry_delivery(
        stack.uow(),
        stack.queue,
        client.id,
        created.endpoint.id,
        attempt.delivery_id,
        actor=SYSTEM_ACTOR,
    )
    stack.drain()
    assert receiver.received[-1].headers["webhook-id"] == f"evt_{attempt.event_id}"


def test_the_feed_returns_exactly_what_the_webhooks_sent_in_order(
    stack: Stack, receiver: Receiver
) -> None:
    # GIVEN several messages' events delivered
    client = stored_client(stack.database)
    created = endpoint(stack, client.id, receiver.url())
    for _ in range(3):
        message_with_events(stack, client.id, (EventType.SENT, {}), (EventType.DELIVERED, {}))
    stack.deliver()
    sent = [
        (r.headers["webhook-id"], verified(created.secret, r))
        for r in in_event_order(receiver.received)
    ]
    # WHEN the feed is read two at a time
    read: list[tuple[str, dict[str, Any]]] = []
    cursor = None
    while True:
        page = webhooks.feed(stack.uow(), client.id, after=cursor, types=None, limit=2)
        if not page.events:
            break
        read.extend(page.events)
        cursor = page.next_cursor
    # THEN it is the same events, same bodies, same order
    assert len(read) == 9
    assert read == sent
    # AND a type filter narrows it
    page = webhooks.feed(stack.uow(), client.id, after=None, types=["email.delivered"], limit=50)
    assert [b["type"] for _, b in page.events] == ["email.delivered"] * 3


def test_a_dispatcher_killed_mid_batch_loses_no_event(
    database: Database, aws: str, receiver: Receiver
) -> None:
    # GIVEN 60 events queued for a receiver that takes 50 ms per request, on a
    # queue whose visibility timeout outlasts a claim (as in template.yaml:
    # 720 s against 60 s), so a message comes back once its claims have lapsed
    webhook_queue_url = boto3.client("sqs", region_name="us-east-1").create_queue(
        QueueName=f"webhooks-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "5"}
    )["QueueUrl"]
    setting = SecretKeyring.generate_setting()
    keyring = SecretKeyring.from_setting(setting)
    stack = make_stack(database, webhook_queue_url)
    stack = Stack(
        database,
        webhook_queue_url,
        stack.clock,
        dataclasses.replace(stack.dispatcher, keyring=keyring, claim_lease=timedelta(seconds=2)),
    )
    client = stored_client(database)
    receiver.behaviour["/hook"] = Behaviour(delay_seconds=0.05)
    created = webhooks.create_endpoint(
        stack.uow(),
        keyring,
        client.id,
        url=receiver.url(),
        events=None,
        description=None,
        allow_private=True,
        actor=SYSTEM_ACTOR,
    )
    for _ in range(60):
        message_with_events(stack, client.id)
    assert webhooks.relay(stack.uow(), stack.queue).queued == 60
    # WHEN a dispatcher process takes the batch and is killed partway through
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.webhook_dispatcher_process",
            database.engine.url.render_as_string(hide_password=False),
            webhook_queue_url,
            setting,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'shared'}:{REPO}"},
        stdout=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(receiver.counts) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        process.kill()
        process.wait()
    delivered_before_kill = len(receiver.counts)
    assert 0 < delivered_before_kill < 60
    # AND the queue and a fresh dispatcher carry on once the claims lapse
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        stack.clock.now = datetime.now(UTC)
        stack.drain()
        (pending,) = sql(
            database, "SELECT count(*) AS n FROM webhook_deliveries WHERE status <> 'succeeded'"
        )
        if pending.n == 0:
            break
    # THEN every event arrived at least once, each verified, none missing
    ids = {f"evt_{row.id}" for row in sql(database, "SELECT id FROM webhook_events")}
    assert set(receiver.counts) == ids
    assert len(ids) == 60
    for received in receiver.received:
        verified(created.secret, received)


def test_a_slow_endpoint_neither_holds_the_batch_nor_takes_more_than_its_lanes(
    database: Database, webhook_queue_url: str, receiver: Receiver
) -> None:
    # GIVEN a fast endpoint and one answering after 2 s, and a dispatcher that
    # waits 0.5 s for its lanes
    stack = make_stack(database, webhook_queue_url)
    dispatcher = dataclasses.replace(stack.dispatcher, batch_wait_seconds=0.5, per_endpoint=2)
    client = stored_client(database)
    receiver.behaviour["/slow"] = Behaviour(delay_seconds=2)
    slow = endpoint(stack, client.id, receiver.url("/slow"))
    fast = endpoint(stack, client.id, receiver.url("/fast"))
    for _ in range(4):
        message_with_events(stack, client.id)
    stack.relay()
    ids = [row.id for row in sql(database, "SELECT id FROM webhook_deliveries ORDER BY id")]
    # WHEN one batch holds all eight deliveries
    report = dispatcher.dispatch(ids)
    # THEN the fast endpoint's four are settled when the call returns, the slow
    # one's are still being sent in its two lanes
    by_endpoint = {
        row.endpoint_id: row.statuses
        for row in sql(
            database,
            "SELECT endpoint_id, array_agg(status ORDER BY id) AS statuses "
            "FROM webhook_deliveries GROUP BY endpoint_id",
        )
    }
    assert by_endpoint[fast.endpoint.id] == ["succeeded"] * 4
    assert by_endpoint[slow.endpoint.id] == ["pending"] * 4
    assert report.still_running == 2
    # AND new deliveries for the slow endpoint wait (deferred, no attempt counted)
    message_with_events(stack, client.id)
    stack.relay()
    newest = [
        row.id
        for row in sql(
            database,
            "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND claim_token IS NULL",
        )
    ]
    later = dispatcher.dispatch(newest)
    assert later.deferred == 1
    # AND the slow lanes record their outcomes themselves when they end
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (row,) = sql(
            database,
            "SELECT count(*) AS n FROM webhook_deliveries "
            "WHERE endpoint_id = :e AND status = 'succeeded'",
            e=slow.endpoint.id,
        )
        if row.n == 4:
            break
        time.sleep(0.1)
    assert row.n == 4


def test_each_post_is_a_span_under_the_dispatchers_batch_span(
    stack: Stack, receiver: Receiver
) -> None:
    # GIVEN tracing on, and a message with three events for one endpoint
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        client = stored_client(stack.database)
        created = endpoint(stack, client.id, receiver.url())
        message_with_events(
            stack, client.id, (EventType.SENT, {"provider": "smtp"}), ("delivered", {})
        )
        stack.relay()
        # WHEN one dispatcher batch sends them (its lanes on the thread pool)
        with tracing.root_span("webhook.dispatch"):
            stack.drain()
    finally:
        tracing.disable()
    # THEN each POST is a span of its own, a child of the batch span, with
    # the endpoint, the webhook id the receiver saw and the answer's status
    finished = exporter.get_finished_spans()
    (batch,) = [s for s in finished if s.name == "webhook.dispatch"]
    posts = [s for s in finished if s.name == "webhook.post"]
    assert len(posts) == len(receiver.received) == 3
    assert batch.context is not None
    for post in posts:
        assert post.parent is not None
        assert post.parent.span_id == batch.context.span_id
        assert post.context is not None
        assert post.context.trace_id == batch.context.trace_id
        assert post.attributes is not None
        assert post.attributes["endpoint"] == str(created.endpoint.id)
        assert post.attributes["http.status_code"] == 200
        assert post.attributes["attempt"] == 1
    assert {p.attributes["webhook_id"] for p in posts if p.attributes} == {
        r.headers["webhook-id"] for r in receiver.received
    }


def test_events_past_the_retention_go_with_their_deliveries_a_bounded_number_a_pass(
    stack: Stack, receiver: Receiver
) -> None:
    # GIVEN three delivered events (queued, sent, delivered) of one message
    client = stored_client(stack.database)
    endpoint(stack, client.id, receiver.url())
    message_with_events(stack, client.id, (EventType.SENT, {}), ("delivered", {}))
    stack.deliver()
    ids = [r[0] for r in sql(stack.database, "SELECT id FROM webhook_events ORDER BY id")]
    mine = ids[-3:]
    # AND the first two are 31 days old, the last one fresh
    sql(
        stack.database,
        "UPDATE webhook_events SET at = now() - interval '31 days' "
        "WHERE id = ANY(CAST(:ids AS bigint[]))",
        ids="{" + ",".join(str(i) for i in mine[:2]) + "}",
    )
    older = [i for i in ids if i not in mine]
    sql(
        stack.database,
        "UPDATE webhook_events SET at = now() - interval '40 days' "
        "WHERE id = ANY(CAST(:ids AS bigint[]))",
        ids="{" + ",".join(str(i) for i in older) + "}",
    )
    retention = timedelta(days=30)

    def kept() -> list[int]:
        return [r[0] for r in sql(stack.database, "SELECT id FROM webhook_events ORDER BY id")]

    # WHEN one purge pass may delete one event
    purged = webhooks.purge_expired(stack.uow(), retention=retention, limit=1)
    # THEN exactly the oldest went
    assert purged == 1
    assert kept() == ids[1:]
    # WHEN passes run until nothing is left to purge
    while webhooks.purge_expired(stack.uow(), retention=retention, limit=2):
        pass
    # THEN only the fresh event is kept, with its delivery and attempt
    assert kept() == [mine[2]]
    deliveries = sql(stack.database, "SELECT event_id FROM webhook_deliveries")
    assert [d[0] for d in deliveries] == [mine[2]]
    attempts = sql(
        stack.database,
        "SELECT d.event_id FROM webhook_attempts a "
        "JOIN webhook_deliveries d ON d.id = a.delivery_id",
    )
    assert [a[0] for a in attempts] == [mine[2]]
    # AND the feed still serves it
    page = webhooks.feed(stack.uow(), client.id, after=None, types=None, limit=10)
    assert [webhook_id for webhook_id, _ in page.events] == [f"evt_{mine[2]}"]


def test_an_endpoint_may_take_only_each_messages_first_human_open(
    stack: Stack, receiver: Receiver
) -> None:
    # GIVEN two endpoints for email.opened, one for every open, one for first opens only
    client = stored_client(stack.database)

    def opened_endpoint(path: str, opens: str) -> webhooks.CreatedEndpoint:
        return webhooks.create_endpoint(
            stack.uow(),
            KEYRING,
            client.id,
            url=receiver.url(path),
            events=["email.opened"],
            description=None,
            allow_private=True,
            actor=SYSTEM_ACTOR,
            opens=opens,
        )

    every = opened_endpoint("/all", "all")
    first = opened_endpoint("/first", "first")
    assert first.endpoint.opens == "first"
    # WHEN a message is opened by a mail proxy, then by its reader, then again
    message_with_events(
        stack,
        client.id,
        ("opened", {"machine": True, "first_open": False}),
        ("opened", {"machine": False, "first_open": True}),
        ("opened", {"machine": False, "first_open": False}),
    )
    stack.deliver()

    # THEN the first endpoint hears of all three, the second of the reader's first open only
    def opens_at(path: str) -> list[dict[str, Any]]:
        secret = every.secret if path == "/all" else first.secret
        return [
            verified(secret, r)["data"] for r in in_event_order(receiver.received) if r.path == path
        ]

    assert [d["machine"] for d in opens_at("/all")] == [True, False, False]
    (only,) = opens_at("/first")
    assert (only["machine"], only["first_open"]) == (False, True)
    # AND a replay of the hour keeps to the same choice
    count = webhooks.replay(
        stack.uow(),
        stack.queue,
        client.id,
        first.endpoint.id,
        start=stack.clock.now - timedelta(hours=1),
        end=stack.clock.now + timedelta(minutes=1),
        actor=SYSTEM_ACTOR,
    )
    assert count == 1
    # AND the choice can be changed back
    changed = webhooks.update_endpoint(
        stack.uow(),
        client.id,
        first.endpoint.id,
        opens="all",
        allow_private=True,
        actor=SYSTEM_ACTOR,
    )
    assert changed.opens == "all"
