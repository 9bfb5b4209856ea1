"""Delivery feedback on real PostgreSQL, Redis, moto SQS and an SMTP socket."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from pydantic import SecretStr
from sqlalchemy import func, select, text

from mailroom.adapters.db.tables import (
    DeliveryEventRow,
    MessageEventRow,
    MessageRecipientRow,
    MessageRow,
    SuppressionRow,
)
from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.webhooks.registry import WebhookRegistry
from mailroom.adapters.webhooks.replay import RedisReplayGuard
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.feedback import (
    DeliveryEvent,
    FeedbackEventType,
    RejectReason,
    Suppression,
    SuppressionReason,
)
from mailroom.domain.model import Message, MessageStatus
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.webhooks import (
    create_webhooks_api,
    process_sns_event,
    webhooks_function_routes,
)
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services.clients import RegisteredClient, register_client
from mailroom.services.feedback import record_delivery_events
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.fakes_feedback import FixedClock, StaticFetcher
from tests.feedback_support import (
    CERT_URL,
    MAILGUN_SIGNING_KEY,
    NOW,
    TOPIC_ARN,
    fixture,
    mailgun_signed,
    sendgrid_signer,
    ses_envelope,
    sns_lambda_event,
    sns_signer,
    webhook_event,
)
from tests.integration.conftest import SmtpSink, sqs_event

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SAMPLE = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())
TABLES = (MessageRow, MessageEventRow, DeliveryEventRow, MessageRecipientRow, SuppressionRow)


class Stack:
    def __init__(self, database: Database, redis_url: str, queue_url: str, smtp_port: int) -> None:
        self.database = database
        self.redis_url = redis_url
        self.queue_url = queue_url
        self.settings = Settings(
            database_url=database.engine.url.render_as_string(hide_password=False),
            redis_url=redis_url,
            queue_url=queue_url,
            templates_dir=TEMPLATES,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            max_send_attempts=2,
            sns_topic_arns=TOPIC_ARN,
            sendgrid_webhook_public_key=sendgrid_signer().public_key,
            mailgun_webhook_signing_key=SecretStr(MAILGUN_SIGNING_KEY),
        )
        self.fetcher = StaticFetcher({CERT_URL: sns_signer().certificate_pem})
        self.services: Services = bootstrap(
            self.settings,
            webhooks=WebhookRegistry(
                self.settings,
                fetcher=self.fetcher,
                replay_guard=RedisReplayGuard(RedisStore(redis_url)),
                clock=FixedClock(NOW),
            ),
        )
        self.client: RegisteredClient = register_client(
            self.services.uow(), self.services.hasher, name="acme"
        )
        self.api = create_api(
            [send_routes(lambda: self.services), status_routes(lambda: self.services)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )
        self.webhooks = create_webhooks_api(
            webhooks_function_routes(lambda: self.services),
            max_request_bytes=lambda: self.settings.webhook_max_request_bytes,
        )

    def send(self, to: str | list[str]) -> tuple[int, dict[str, Any]]:
        event = load_event("send/send-welcome")
        with_headers(event, X_Api_Key=self.client.api_key, X_Api_Secret=self.client.api_secret)
        with_body(event, {"template": "welcome", "to": to, "props": SAMPLE})
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def get(
        self, path: str, client: RegisteredClient | None = None, **query: str
    ) -> tuple[int, Any]:
        event = load_event("status/get-message")
        event["path"] = path
        event["queryStringParameters"] = query or None
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
        client = client or self.client
        with_headers(event, X_Api_Key=client.api_key, X_Api_Secret=client.api_secret)
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def post(self, provider: str, body: str | bytes, **headers: str) -> tuple[int, dict[str, Any]]:
        response = self.webhooks.resolve(
            webhook_event(provider, body, **headers), FakeLambdaContext()
        )
        return response["statusCode"], json.loads(response["body"])

    def run_worker_once(self) -> dict[str, Any]:
        sqs = boto3.client("sqs", region_name="us-east-1")
        received = sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        assert received, "nothing on the queue"
        arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        event = sqs_event(received, arn["Attributes"]["QueueArn"])
        return process_send_batch(event, FakeLambdaContext("mailroom-worker"), self.services)

    def message(self, provider: str, provider_msg_id: str, to: list[str]) -> Message:
        message = Message(
            id=uuid.uuid4(),
            client_id=self.client.client.id,
            trace_id="t",
            template_name="welcome",
            from_address="noreply@example.com",
            to=to,
            status=MessageStatus.SENT,
            provider=provider,
            provider_msg_id=provider_msg_id,
        )
        with self.services.uow() as uow:
            uow.messages.add(message)
            uow.messages.save_outcome(message)  # add() writes no provider fields
            uow.commit()
        return message

    def status_of(self, message_id: uuid.UUID) -> str:
        with self.database.engine.connect() as connection:
            return str(
                connection.execute(
                    select(MessageRow.status).where(MessageRow.id == message_id)
                ).scalar_one()
            )

    def counts(self) -> dict[str, int]:
        with self.database.engine.connect() as connection:
            return {
                table.__tablename__: int(
                    connection.execute(select(func.count()).select_from(table)).scalar_one()
                )
                for table in TABLES
            }

    def suppressions(self) -> list[tuple[str, str, bool]]:
        with self.database.engine.connect() as connection:
            rows = connection.execute(
                select(
                    SuppressionRow.address, SuppressionRow.reason, SuppressionRow.client_id
                ).order_by(SuppressionRow.address)
            ).all()
        return sorted((address, reason, client_id is None) for address, reason, client_id in rows)


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(database, redis_url, queue_url, smtp_sink.port)


def test_a_bounce_reported_by_ses_reaches_status_suppression_and_the_next_send(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a message to two recipients, sent through the SMTP relay by the worker
    status, accepted = stack.send(["ada@example.com", "bob@example.com"])
    assert status == 202
    assert stack.run_worker_once() == {"batchItemFailures": []}
    (mail,) = smtp_sink.received
    our_message_id = message_from_bytes(mail.data)["Message-ID"]
    # WHEN SES (relaying that SMTP mail) reports a hard bounce for bob, under its
    # own message id, with our Message-ID in the headers
    bounce = fixture("ses", "notification-bounce-permanent.json")
    bounce["mail"]["messageId"] = "0100018c-ses-own-id"
    bounce["mail"]["commonHeaders"]["messageId"] = our_message_id
    bounce["bounce"]["bouncedRecipients"][0]["emailAddress"] = "bob@example.com"
    code, answer = stack.post("ses", json.dumps(ses_envelope(bounce)))
    assert (code, answer["applied"]) == (200, 1)
    # THEN the client sees the bounce, per recipient
    code, view = stack.get(f"/v1/messages/{accepted['id']}")
    assert code == 200
    assert view["status"] == "bounced"
    assert {r["address"]: r["status"] for r in view["recipients"]} == {
        "ada@example.com": "sent",
        "bob@example.com": "bounced",
    }
    # AND bob is suppressed for everyone, so the next send to him is refused
    assert stack.suppressions() == [("bob@example.com", "hard_bounce", True)]
    code, refused = stack.send("Bob <bob@example.com>")
    assert (code, refused["error"]["code"]) == (422, "suppressed")
    # AND the events route shows the whole story
    code, events = stack.get(f"/v1/messages/{accepted['id']}/events")
    assert [e["type"] for e in events["events"]] == ["accepted", "sent", "bounced"]


def test_a_duplicate_is_applied_once_by_the_unique_key(stack: Stack) -> None:
    payload = fixture("ses", "event-bounce-permanent.json")
    message = stack.message("ses", payload["mail"]["messageId"], ["recipient@example.com"])
    envelope = json.dumps(ses_envelope(payload, message_id="retried-sns-message"))
    assert stack.post("ses", envelope)[1]["applied"] == 1
    assert stack.post("ses", envelope)[1]["duplicates"] == 1
    # the same SNS message invoking the function directly is the same event too
    event = sns_lambda_event(payload, message_id="retried-sns-message")
    assert process_sns_event(event, stack.services)["duplicates"] == 1
    counts = stack.counts()
    assert (counts["delivery_events"], counts["message_events"]) == (1, 1)
    assert stack.status_of(message.id) == "bounced"


def test_out_of_order_and_concurrent_events_end_at_the_most_severe_status(stack: Stack) -> None:
    # GIVEN a sent message
    message = stack.message("sendgrid", "14c5d75ce93", ["example@test.com"])

    def report(n: int) -> None:
        event_type = FeedbackEventType.BOUNCED if n == 7 else FeedbackEventType.DELIVERED
        record_delivery_events(
            stack.services.uow(),
            [
                DeliveryEvent(
                    provider="sendgrid",
                    event_type=event_type,
                    event_id=f"event-{n}",
                    timestamp=NOW,
                    message_id="14c5d75ce93",
                    recipient="example@test.com",
                    reject_reason=RejectReason.BOUNCED if n == 7 else None,
                )
            ],
        )

    # WHEN eight events (one bounce among deliveries) are applied at the same time
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(report, range(8)))
    # THEN the bounce wins, whatever the interleaving
    assert stack.status_of(message.id) == "bounced"
    with stack.database.engine.connect() as connection:
        outcome = connection.execute(
            select(MessageRecipientRow.status, MessageRecipientRow.rank)
        ).one()
    assert tuple(outcome) == ("bounced", 3)
    # AND a delivery arriving later does not resurrect it
    body = json.dumps(fixture("sendgrid", "delivered.json")).encode()
    assert stack.post("sendgrid", body, **sendgrid_signer().headers(body))[0] == 200
    assert stack.status_of(message.id) == "bounced"


def _refusals(stack: Stack) -> list[tuple[str, tuple[str, str | bytes, dict[str, str]], str]]:
    bounce = fixture("ses", "event-bounce-permanent.json")
    forged = ses_envelope(bounce)
    forged["Message"] = forged["Message"].replace("Permanent", "Transient")
    foreign_topic = fixture("ses", "sns-notification.json")
    foreign_topic.update(
        TopicArn="arn:aws:sns:us-west-2:999999999999:Other", Message=json.dumps(bounce)
    )
    foreign_cert = fixture("ses", "sns-notification.json")
    foreign_cert.update(
        Message=json.dumps(bounce),
        SigningCertURL="https://sns.us-west-2.amazonaws.com.evil.example/cert.pem",
    )
    sendgrid_body = json.dumps(fixture("sendgrid", "bounce.json")).encode()
    stale_sendgrid = sendgrid_signer().headers(sendgrid_body, timestamp=NOW - timedelta(hours=2))
    replayed = mailgun_signed(fixture("mailgun", "failed-permanent.json"), token="replayed-token")
    # The first use is legitimate; the test sends it again below.
    assert stack.post("mailgun", json.dumps(replayed))[0] == 200
    return [
        ("forged signature", ("ses", json.dumps(forged), {}), "invalid_signature"),
        (
            "wrong topic",
            ("ses", json.dumps(sns_signer().sign(foreign_topic)), {}),
            "topic_not_allowed",
        ),
        (
            "certificate URL on a foreign host",
            ("ses", json.dumps(sns_signer().sign(foreign_cert)), {}),
            "untrusted_certificate_url",
        ),
        (
            "stale SendGrid timestamp",
            ("sendgrid", sendgrid_body, stale_sendgrid),
            "stale_timestamp",
        ),
        (
            "stale Mailgun timestamp",
            (
                "mailgun",
                json.dumps(
                    mailgun_signed(
                        fixture("mailgun", "complained.json"), timestamp=NOW - timedelta(hours=1)
                    )
                ),
                {},
            ),
            "stale_timestamp",
        ),
        (
            "forged Mailgun signature",
            (
                "mailgun",
                json.dumps(mailgun_signed(fixture("mailgun", "complained.json"), key="guess")),
                {},
            ),
            "invalid_signature",
        ),
        ("replayed Mailgun token", ("mailgun", json.dumps(replayed), {}), "replayed_token"),
    ]


def test_refused_requests_change_nothing_in_the_database(stack: Stack) -> None:
    # GIVEN messages every forged request names
    stack.message("ses", "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000", ["r@x.io"])
    stack.message("sendgrid", "14c5d75ce93", ["example@test.com"])
    stack.message("mailgun", "20180812211713.1.DF5966851B4BAA99@example.org", ["r@example.com"])
    cases = _refusals(stack)
    before = stack.counts()
    for name, (provider, body, headers), code in cases:
        # WHEN each arrives
        status, answer = stack.post(provider, body, **headers)
        # THEN it is refused with its code, and no table has a row more or less
        assert 400 <= status < 500, name
        assert answer["error"]["code"] == code, name
        assert stack.counts() == before, name


def test_the_redis_replay_guard_claims_once_for_the_window(redis_url: str) -> None:
    guard = RedisReplayGuard(RedisStore(redis_url))
    key = f"mailgun:{uuid.uuid4().hex}"
    assert guard.claim(key, 600) is True
    assert guard.claim(key, 600) is False
    ttl = redis.Redis.from_url(redis_url).ttl(RedisReplayGuard.PREFIX + key)
    assert 0 < ttl <= 600
    guard.release(key)
    assert guard.claim(key, 600) is True


def test_suppression_entries_are_one_per_scope_and_address(stack: Stack) -> None:
    client_id = stack.client.client.id
    with stack.services.uow() as uow:
        uow.suppressions.upsert(Suppression("a@example.com", SuppressionReason.MANUAL))
        again = uow.suppressions.upsert(
            Suppression("a@example.com", SuppressionReason.HARD_BOUNCE, source="ses:1")
        )
        uow.suppressions.upsert(
            Suppression("a@example.com", SuppressionReason.COMPLAINT, client_id=client_id)
        )
        uow.suppressions.upsert(
            Suppression(
                "old@example.com",
                SuppressionReason.MANUAL,
                expires_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
        uow.commit()
    assert again.reason is SuppressionReason.HARD_BOUNCE
    assert stack.suppressions() == [
        ("a@example.com", "complaint", False),
        ("a@example.com", "hard_bounce", True),
        ("old@example.com", "manual", True),
    ]
    with stack.services.uow() as uow:
        active = uow.suppressions.active_for(
            client_id, ["a@example.com", "old@example.com"], datetime.now(UTC)
        )
        other = uow.suppressions.active_for(uuid.uuid4(), ["a@example.com"], datetime.now(UTC))
    assert sorted(s.reason.value for s in active) == ["complaint", "hard_bounce"]
    assert [s.reason for s in other] == [SuppressionReason.HARD_BOUNCE]


def test_listing_pages_filters_and_isolation_on_postgres(stack: Stack) -> None:
    ids = []
    for n in range(5):
        code, body = stack.send(
            f"user{n}@example.com" if n != 2 else ["x@example.com", "ada@example.com"]
        )
        assert code == 202
        ids.append(body["id"])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        code, page = (
            stack.get("/v1/messages", limit="2", cursor=cursor)
            if cursor
            else stack.get("/v1/messages", limit="2")
        )
        assert code == 200
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    assert [
        m["id"] for m in stack.get("/v1/messages", recipient="ADA@example.com")[1]["messages"]
    ] == [ids[2]]
    assert stack.get("/v1/messages", status="delivered")[1]["messages"] == []
    # client B sees none of it
    other = register_client(stack.services.uow(), stack.services.hasher, name="other")
    assert stack.get("/v1/messages", other)[1] == {"messages": [], "next_cursor": None}
    for path in (f"/v1/messages/{ids[0]}", f"/v1/messages/{ids[0]}/events"):
        code, body = stack.get(path, other)
        assert (code, body["error"]["code"]) == (404, "message_not_found")


def test_orphans_are_stored_and_adopted_on_postgres(stack: Stack) -> None:
    payload = fixture("mailgun", "delivered.json")
    code, answer = stack.post("mailgun", json.dumps(mailgun_signed(payload)))
    assert (code, answer["orphans"]) == (200, 1)
    message = stack.message("mailgun", "20180812211713.1.DF5966851B4BAA99@example.org", ["r@e.io"])
    code, answer = stack.post(
        "mailgun", json.dumps(mailgun_signed(fixture("mailgun", "opened.json")))
    )
    assert (answer["applied"], answer["adopted"]) == (1, 1)
    assert stack.status_of(message.id) == "delivered"
    with stack.database.engine.connect() as connection:
        orphans = connection.execute(
            text("SELECT count(*) FROM delivery_events WHERE message_id IS NULL")
        ).scalar_one()
    assert orphans == 0


def test_a_recipient_suppressed_after_acceptance_never_reaches_the_smtp_server(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a queued message to two recipients
    code, accepted = stack.send(["ada@example.com", "bob@example.com"])
    assert code == 202
    # AND bob unsubscribes from this client before the worker runs
    with stack.services.uow() as uow:
        uow.suppressions.upsert(
            Suppression(
                "bob@example.com", SuppressionReason.UNSUBSCRIBE, client_id=stack.client.client.id
            )
        )
        uow.commit()
    # WHEN the worker sends it
    assert stack.run_worker_once() == {"batchItemFailures": []}
    # THEN only ada's address reaches the SMTP server, and bob reads suppressed
    (mail,) = smtp_sink.received
    assert mail.recipients == ["ada@example.com"]
    _, view = stack.get(f"/v1/messages/{accepted['id']}")
    assert {r["address"]: r["status"] for r in view["recipients"]} == {
        "ada@example.com": "sent",
        "bob@example.com": "suppressed",
    }


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_each_recipient_says_when_its_own_outcome_last_changed(stack: Stack) -> None:
    # GIVEN a message to ada and bob, accepted and then sent by the worker
    status, accepted = stack.send(["ada@example.com", "bob@example.com"])
    assert status == 202
    _, queued = stack.get(f"/v1/messages/{accepted['id']}")
    assert {r["updated_at"] for r in queued["recipients"]} == {queued["created_at"]}
    assert stack.run_worker_once() == {"batchItemFailures": []}
    _, sent = stack.get(f"/v1/messages/{accepted['id']}")
    sent_at = {r["address"]: r["updated_at"] for r in sent["recipients"]}
    # THEN both recipients changed outcome (queued → sent) when the message was sent
    assert sent_at["ada@example.com"] == sent_at["bob@example.com"]
    assert _when(sent_at["ada@example.com"]) > _when(queued["created_at"])
    # WHEN a provider reports a hard bounce for bob alone
    with stack.database.engine.connect() as connection:
        provider_msg_id = connection.execute(
            select(MessageRow.provider_msg_id).where(MessageRow.id == uuid.UUID(accepted["id"]))
        ).scalar_one()
    record_delivery_events(
        stack.services.uow(),
        [
            DeliveryEvent(
                provider="smtp",
                event_type=FeedbackEventType.BOUNCED,
                timestamp=datetime.now(UTC),
                event_id="bounce-bob",
                message_id=provider_msg_id,
                recipient="bob@example.com",
                reject_reason=RejectReason.BOUNCED,
            )
        ],
    )
    # THEN bob's row moved on and ada's did not, though the message now reads bounced
    _, bounced = stack.get(f"/v1/messages/{accepted['id']}")
    after = {r["address"]: (r["status"], r["updated_at"]) for r in bounced["recipients"]}
    assert bounced["status"] == "bounced"
    assert after["ada@example.com"] == ("sent", sent_at["ada@example.com"])
    assert after["bob@example.com"][0] == "bounced"
    assert _when(after["bob@example.com"][1]) > _when(sent_at["bob@example.com"])


def test_two_consumers_applying_overlapping_batches_at_once_apply_each_event_once(
    stack: Stack,
) -> None:
    # GIVEN 20 sent messages and a SendGrid-style stream of 60 events about
    # them (a delivery, an open and, for every fifth, a bounce after)
    messages = [stack.message("sendgrid", f"sg-{n}", [f"r{n}@example.com"]) for n in range(20)]
    events = [
        DeliveryEvent(
            provider="sendgrid",
            event_type=kind,
            event_id=f"{kind.value}-{n}",
            timestamp=NOW,
            message_id=f"sg-{n}",
            recipient=f"r{n}@example.com",
            reject_reason=RejectReason.BOUNCED if kind is FeedbackEventType.BOUNCED else None,
        )
        for n in range(20)
        for kind in (
            FeedbackEventType.DELIVERED,
            FeedbackEventType.OPENED,
            *([FeedbackEventType.BOUNCED] if n % 5 == 0 else []),
        )
    ]
    before = stack.counts()
    # WHEN two consumers apply overlapping batches at the same moment, twice each
    # (a redelivery), the second in the opposite order of events
    halves = [events[: len(events) * 2 // 3], events[len(events) // 3 :][::-1]]
    start = threading.Barrier(2)

    def consume(batch: list[DeliveryEvent]) -> list[int]:
        start.wait()
        return [record_delivery_events(stack.services.uow(), batch).applied for _ in range(2)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        applied = list(pool.map(consume, halves))
    # THEN each event was applied exactly once between them
    assert sum(sum(runs) for runs in applied) == len(events)
    after = stack.counts()
    assert after["delivery_events"] - before["delivery_events"] == len(events)
    assert after["message_events"] - before["message_events"] == len(events)
    # AND every message moved forward only: bounced where a bounce came, else delivered
    for n, message in enumerate(messages):
        assert stack.status_of(message.id) == ("bounced" if n % 5 == 0 else "delivered")
    # AND the bounced recipients are suppressed once each
    assert [s for s in stack.suppressions() if s[1] == "hard_bounce"] == [
        (f"r{n}@example.com", "hard_bounce", True) for n in sorted(range(0, 20, 5), key=str)
    ]
