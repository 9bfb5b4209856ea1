"""Failover, breakers, backoff and the DLQ on real parts.

PostgreSQL and Redis are the machine's; SQS and SES are moto's server; the
primary SMTP relay is aiosmtpd that the test switches down and up; SendGrid
is the local double of provider_doubles.py. Breaker time comes from a manual
clock (cooldowns pass without sleeping); SQS time is simulated by making a
held-back record visible again, after asserting how long it was held back.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger

from mailroom.adapters.breakers import ProviderBreakers
from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.dead_letter_queue import SqsDeadLetterQueue
from mailroom.adapters.operator_signals import OperatorSignals, PowertoolsSignals, SignalKey
from mailroom.adapters.providers.base import EmailProvider
from mailroom.adapters.providers.sendgrid import SendGridProvider
from mailroom.adapters.providers.ses import SesProvider
from mailroom.adapters.providers.smtp import SmtpProvider
from mailroom.adapters.queue import SqsMessageQueue
from mailroom.adapters.queue_records import SqsQueueRecords
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services.clients import register_client
from tests.events import FakeLambdaContext, request_event
from tests.fakes import PlainHasher
from tests.integration.conftest import sqs_event
from tests.integration.provider_doubles import SendGridDouble, SwitchableSmtp, running
from tests.provider_fakes import ManualClock, RecordingSignals

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SENDER = "Acme <noreply@acme.example.com>"
SAMPLE_PROPS = json.loads((REPO / "templates" / "welcome" / "sample.json").read_text())
ADMIN_TOKEN = "failover-test-admin-token-0123456789abcdef"


class RecordingQueueRecords(SqsQueueRecords):
    """The real SQS adapter, remembering each backoff it applied."""

    def __init__(self, queue_url: str, region: str) -> None:
        super().__init__(queue_url, region)
        self.postponed: list[int] = []

    def postpone(self, receipt_handle: str, seconds: int) -> bool:
        applied = super().postpone(receipt_handle, seconds)
        assert applied, "SQS refused the visibility change"
        self.postponed.append(seconds)
        return applied


class Stack:
    """The worker wired to real services, with the test's providers in the test's order."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        queue_url: str,
        providers: dict[str, EmailProvider],
        *,
        signals: OperatorSignals | None = None,
        max_send_attempts: int = 5,
    ) -> None:
        self.queue_url = queue_url
        self.dlq_url = queue_url + "-dlq"  # the conftest queue fixture's DLQ
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            queue_url=queue_url,
            dead_letter_queue_url=self.dlq_url,
            templates_dir=REPO / "templates",
            default_from=SENDER,
            provider_order=",".join(providers),
            max_send_attempts=max_send_attempts,
            retry_base_delay_seconds=45,
            retry_max_delay_seconds=600,
            retry_jitter=0,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        )
        self.clock = ManualClock()
        self.signals = signals or RecordingSignals()
        self.breakers = ProviderBreakers.in_redis(
            redis_url,
            self.signals,
            failure_threshold=5,
            cooldown_seconds=30,
            success_threshold=3,
            clock=self.clock,
        )
        self.records = RecordingQueueRecords(queue_url, "us-east-1")
        self.services: Services = bootstrap(
            self.settings,
            hasher=PlainHasher(),
            providers=providers,
            breakers=self.breakers,
            signals=self.signals,
            queue_records=self.records,
        )
        self.client = register_client(self.services.uow(), PlainHasher(), name="acme").client
        self.sqs = boto3.client("sqs", region_name="us-east-1")

    def queue(self, to: str = "ada@example.com") -> uuid.UUID:
        """A message as the send API leaves it: a queued row, and its id on SQS."""
        message = Message(
            id=uuid.uuid4(),
            client_id=self.client.id,
            trace_id=uuid.uuid4().hex,
            template_name="welcome",
            from_address=SENDER,
            to=[to],
            props=SAMPLE_PROPS,
        )
        with self.services.uow() as uow:
            uow.messages.add(message)
            uow.messages.append_event(message.id, EventType.ACCEPTED, {})
            uow.commit()
        SqsMessageQueue(self.queue_url, "us-east-1").enqueue(message.id, message.trace_id)
        return message.id

    def run_worker(self, expect: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        received = receive_all(self.sqs, self.queue_url)
        assert received, "nothing on the send queue"
        if expect is not None:
            assert len(received) == expect
        return self.invoke(received), received

    def invoke(self, received: list[dict[str, Any]]) -> dict[str, Any]:
        """One worker invocation; then, as Lambda's poller does, delete what did not fail."""
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        event = sqs_event(received, arn["Attributes"]["QueueArn"])
        answer = process_send_batch(event, FakeLambdaContext("mailroom-worker"), self.services)
        failed = {item["itemIdentifier"] for item in answer["batchItemFailures"]}
        for message in received:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        return answer

    def release(self, received: list[dict[str, Any]]) -> None:
        """Time passes: the held-back records are visible again."""
        for message in received:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )

    def message(self, message_id: uuid.UUID) -> Message:
        with self.services.uow() as uow:
            message = uow.messages.get(message_id)
        assert message is not None
        return message

    def events(self, message_id: uuid.UUID) -> list[tuple[EventType, dict[str, Any]]]:
        with self.services.uow() as uow:
            return [(event.type, event.detail) for event in uow.messages.events(message_id)]

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        api = create_api(admin_routes(lambda: self.services), max_request_bytes=lambda: 65536)
        event = request_event(method, path, body=body, Authorization=f"Bearer {ADMIN_TOKEN}")
        response = api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])


def receive_all(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)


def database_url_of(database: Database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


def ses_sent(endpoint: str) -> list[dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as answer:
        return list(json.loads(answer.read())["ses"]["RawMessage"])


@pytest.fixture
def primary() -> Iterator[SwitchableSmtp]:
    server = SwitchableSmtp().start()
    yield server
    server.stop()


@pytest.fixture
def sendgrid() -> Iterator[SendGridDouble]:
    yield from running(SendGridDouble())  # type: ignore[misc]


@pytest.fixture
def ses(aws: str) -> str:
    boto3.client("sesv2", region_name="us-east-1").create_email_identity(
        EmailIdentity="noreply@acme.example.com"
    )
    return aws


def smtp(server: SwitchableSmtp) -> SmtpProvider:
    return SmtpProvider(server.host, server.port, timeout_seconds=2)


@pytest.fixture
def smtp_then_ses(
    database: Database, redis_url: str, queue_url: str, primary: SwitchableSmtp, ses: str
) -> Stack:
    return Stack(
        database_url_of(database),
        redis_url,
        queue_url,
        {"smtp": smtp(primary), "ses": SesProvider("us-east-1")},
    )


def test_the_primary_down_fails_over_with_nothing_lost_and_the_breaker_skips_it(
    smtp_then_ses: Stack, primary: SwitchableSmtp, ses: str
) -> None:
    stack = smtp_then_ses
    # GIVEN the primary SMTP relay is down (421) and six messages are queued
    primary.mode = "down"
    ids = [stack.queue() for _ in range(6)]
    # WHEN the worker takes the batch
    answer, _ = stack.run_worker(expect=6)
    # THEN every message went out through SES, none is left to retry
    assert answer == {"batchItemFailures": []}
    for message_id in ids:
        message = stack.message(message_id)
        assert (message.status, message.provider) == (MessageStatus.SENT, "ses")
    by_id = {m["id"] for m in ses_sent(ses)}
    assert {stack.message(i).provider_msg_id for i in ids} <= by_id
    # AND the primary was tried exactly up to the threshold, then its breaker opened
    assert primary.mail_commands == 5
    assert stack.breakers.state("smtp") == "open"
    assert isinstance(stack.signals, RecordingSignals)
    assert stack.signals.breaker_states("smtp") == ["open"]
    # AND the sixth message skipped it without trying it
    first, last = stack.events(ids[0]), stack.events(ids[-1])
    assert [t for t, _ in first] == [EventType.ACCEPTED, EventType.PROVIDER_FAILED, EventType.SENT]
    assert first[1][1]["provider"] == "smtp"
    assert [t for t, _ in last] == [EventType.ACCEPTED, EventType.SENT]
    assert last[1][1]["skipped"] == ["smtp"]


def test_after_the_cooldown_the_breaker_half_opens_and_traffic_returns_to_the_primary(
    smtp_then_ses: Stack, primary: SwitchableSmtp
) -> None:
    stack = smtp_then_ses
    primary.mode = "down"
    for _ in range(5):
        stack.queue()
    stack.run_worker(expect=5)
    assert stack.breakers.state("smtp") == "open"
    # GIVEN the primary is back, but the cooldown (30 s) has not passed
    primary.mode = "accept"
    stack.clock.advance(29)
    early = stack.queue()
    stack.run_worker(expect=1)
    assert stack.message(early).provider == "ses"
    # WHEN it has
    stack.clock.advance(1)
    later = [stack.queue() for _ in range(4)]
    stack.run_worker(expect=4)
    # THEN the trial sends went to the primary, three closed the breaker, and it keeps the traffic
    assert [stack.message(i).provider for i in later] == ["smtp"] * 4
    assert stack.breakers.state("smtp") == "closed"
    assert isinstance(stack.signals, RecordingSignals)
    assert stack.signals.breaker_states("smtp") == ["open", "half-open", "closed"]
    assert len(primary.received) == 4


def _worker_process(settings: dict[str, Any], event: dict[str, Any]) -> None:
    """A second worker: its own process, its own adapters, the same Redis."""
    services = bootstrap(Settings(**settings), hasher=PlainHasher())
    answer = process_send_batch(event, FakeLambdaContext("mailroom-worker-b"), services)
    assert answer == {"batchItemFailures": []}, answer


def test_two_worker_processes_share_breaker_state_through_redis(
    smtp_then_ses: Stack, primary: SwitchableSmtp
) -> None:
    stack = smtp_then_ses
    primary.mode = "down"
    # GIVEN worker A (another process, with its own breakers) meets the primary down 5 times
    ids = [stack.queue() for _ in range(5)]
    received = receive_all(stack.sqs, stack.queue_url)
    arn = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])
    settings = {
        **stack.settings.model_dump(mode="json"),
        "smtp_host": primary.host,
        "smtp_port": primary.port,
    }
    process = multiprocessing.get_context("spawn").Process(
        target=_worker_process, args=(settings, sqs_event(received, arn["Attributes"]["QueueArn"]))
    )
    process.start()
    process.join(timeout=120)
    assert process.exitcode == 0
    assert [stack.message(i).provider for i in ids] == ["ses"] * 5
    assert primary.mail_commands == 5
    # WHEN worker B (this process, which never saw a failure) sends the next message
    assert stack.signals.breaker_states("smtp") == []  # type: ignore[attr-defined]
    next_id = stack.queue()
    stack.run_worker(expect=1)
    # THEN it skips the primary: B read A's open breaker from Redis
    assert primary.mail_commands == 5
    assert stack.message(next_id).provider == "ses"
    assert stack.events(next_id)[-1][1]["skipped"] == ["smtp"]
    assert stack.breakers.state("smtp") == "open"


def test_a_permanent_error_fails_only_that_message_and_the_breaker_stays_closed(
    smtp_then_ses: Stack, primary: SwitchableSmtp, ses: str
) -> None:
    stack = smtp_then_ses
    rejected = stack.queue(to="reject-me@example.com")
    others = [stack.queue() for _ in range(5)]
    ses_before = len(ses_sent(ses))
    answer, _ = stack.run_worker(expect=6)
    assert answer == {"batchItemFailures": []}
    refused = stack.message(rejected)
    assert refused.status is MessageStatus.FAILED
    assert refused.last_error is not None
    assert refused.last_error.startswith("permanent: smtp: recipients refused")
    assert [stack.message(i).provider for i in others] == ["smtp"] * 5
    # The permanent refusal was not offered to SES, and the breaker never moved
    assert len(ses_sent(ses)) == ses_before
    assert stack.breakers.state("smtp") == "closed"
    assert stack.signals.breaker_states("smtp") == []  # type: ignore[attr-defined]
    assert len(receive_all(stack.sqs, stack.queue_url)) == 0  # the DLQ is for retries only
    assert SqsDeadLetterQueue(stack.dlq_url, "us-east-1").approximate_count() == 0


def test_all_providers_down_backs_off_then_dead_letters_then_redrive_sends_it(
    database: Database,
    redis_url: str,
    queue_url: str,
    primary: SwitchableSmtp,
    sendgrid: SendGridDouble,
) -> None:
    # GIVEN both providers fail transiently, and three attempts are allowed
    stack = Stack(
        database_url_of(database),
        redis_url,
        queue_url,
        {
            "smtp": smtp(primary),
            "sendgrid": SendGridProvider(sendgrid.api_key, base_url=sendgrid.base_url),
        },
        max_send_attempts=3,
    )
    primary.mode, sendgrid.mode = "down", "down"
    message_id = stack.queue()
    # WHEN the worker tries it three times
    answers = []
    for attempt in (1, 2, 3):
        answer, received = stack.run_worker(expect=1)
        answers.append(answer)
        if attempt < 3:
            stack.release(received)  # the backoff elapses
    # THEN the first two were held back on the exponential schedule...
    record_id = received[0]["MessageId"]
    assert answers[:2] == [{"batchItemFailures": [{"itemIdentifier": record_id}]}] * 2
    assert stack.records.postponed == [45, 90]
    # ...each attempt recording both providers' errors
    attempts = [d for t, d in stack.events(message_id) if t is EventType.ATTEMPT_FAILED]
    assert [(a["attempt"], a["retry_in_seconds"]) for a in attempts] == [(1, 45), (2, 90)]
    tried = [d["provider"] for t, d in stack.events(message_id) if t is EventType.PROVIDER_FAILED]
    assert tried == ["smtp", "sendgrid"] * 3
    # ...and the third ended it: failed with the last error, the record on the DLQ, not the queue
    assert answers[2] == {"batchItemFailures": []}
    failed = stack.message(message_id)
    assert failed.status is MessageStatus.FAILED
    assert (
        failed.last_error
        == "transient: sendgrid: HTTP 503: The SendGrid v3 Web API is not available."
    )
    assert receive_all(stack.sqs, stack.queue_url) == []
    status, listing = stack.admin("GET", "/admin/dlq")
    assert status == 200
    assert [(m["message_id"], m["status"], m["last_error"]) for m in listing["messages"]] == [
        (str(message_id), "failed", failed.last_error)
    ]
    # WHEN the provider is back and an operator redrives the message
    primary.mode = "accept"
    status, report = stack.admin("POST", f"/admin/dlq/{message_id}/redrive")
    assert (status, report["redriven"], report["remaining"]) == (200, [str(message_id)], 0)
    stack.run_worker(expect=1)
    # THEN it is sent, and its history tells the whole story
    sent = stack.message(message_id)
    assert (sent.status, sent.provider, sent.attempts) == (MessageStatus.SENT, "smtp", 1)
    assert len(primary.received) == 1
    types = [t for t, _ in stack.events(message_id)]
    assert types[-3:] == [EventType.FAILED, EventType.REDRIVEN, EventType.SENT]


def test_at_the_queues_redrive_limit_the_message_fails_into_the_dlq_not_left_queued(
    database: Database, redis_url: str, queue_url: str, primary: SwitchableSmtp
) -> None:
    stack = Stack(database_url_of(database), redis_url, queue_url, {"smtp": smtp(primary)})
    primary.mode = "down"
    message_id = stack.queue()
    # GIVEN SQS has handed the record out 7 times already (maxReceiveCount is 8)
    for _ in range(7):
        (received,) = receive_all(stack.sqs, stack.queue_url)
        stack.release([received])
    # WHEN the worker gets the 8th receive and the provider still fails
    answer, received_8 = stack.run_worker(expect=1)
    assert received_8[0]["Attributes"]["ApproximateReceiveCount"] == "8"
    # THEN it fails the message (with attempts left) and moves the record itself
    assert answer == {"batchItemFailures": []}
    message = stack.message(message_id)
    assert (message.status, message.attempts) == (MessageStatus.FAILED, 1)
    letters = SqsDeadLetterQueue(stack.dlq_url, "us-east-1").receive(10, hide_seconds=0)
    assert [letter.message_id for letter in letters] == [message_id]
    assert letters[0].reason is not None
    assert letters[0].reason.startswith("transient: smtp:")


def test_a_config_error_is_an_error_log_line_a_metric_and_an_event_row(
    database: Database,
    redis_url: str,
    queue_url: str,
    primary: SwitchableSmtp,
    sendgrid: SendGridDouble,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN SendGrid first, with a key it refuses, and the real operator signals
    log = io.StringIO()
    stack = Stack(
        database_url_of(database),
        redis_url,
        queue_url,
        {
            "sendgrid": SendGridProvider("SG.revoked", base_url=sendgrid.base_url),
            "smtp": smtp(primary),
        },
        signals=PowertoolsSignals(
            Logger(service="mailroom-worker-test", stream=log), namespace="MailroomTest"
        ),
    )
    message_id = stack.queue()
    capsys.readouterr()
    # WHEN the message is sent
    stack.run_worker(expect=1)
    # THEN it went out through the next provider
    assert stack.message(message_id).provider == "smtp"
    # AND operators see an ERROR line carrying the stable key...
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    (alarm,) = [line for line in lines if line.get("alarm") == "provider_config_error"]
    assert (alarm["level"], alarm["provider"]) == ("ERROR", "sendgrid")
    assert alarm["message_id"] == str(message_id)
    # ...a metric of the same name (CloudWatch EMF)...
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    (metric,) = [m for m in emf if "provider_config_error" in m]
    directive = metric["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "MailroomTest"
    assert directive["Metrics"] == [{"Name": "provider_config_error", "Unit": "Count"}]
    assert (metric["provider_config_error"], metric["provider"]) == ([1.0], "sendgrid")
    # ...and the message's history has the alarm's row
    rows = [d for t, d in stack.events(message_id) if t is EventType.PROVIDER_MISCONFIGURED]
    assert [(d["provider"], d["alarm"]) for d in rows] == [
        ("sendgrid", SignalKey.PROVIDER_CONFIG_ERROR.value)
    ]


def test_the_dlq_routes_without_a_configured_queue_answer_503(
    database: Database, redis_url: str, queue_url: str, primary: SwitchableSmtp
) -> None:
    stack = Stack(database_url_of(database), redis_url, queue_url, {"smtp": smtp(primary)})
    stack.services.dead_letters = SqsDeadLetterQueue("", "us-east-1")
    status, body = stack.admin("GET", "/admin/dlq")
    assert (status, body["error"]["code"]) == (503, "dead_letter_queue_unavailable")


def test_purge_needs_the_queue_name(smtp_then_ses: Stack) -> None:
    stack = smtp_then_ses
    dlq = SqsDeadLetterQueue(stack.dlq_url, "us-east-1")
    dlq.add(uuid.uuid4(), None, "test")
    status, body = stack.admin("POST", "/admin/dlq/purge", {"confirm": "yes"})
    assert (status, body["error"]["code"]) == (422, "confirmation_required")
    status, body = stack.admin("POST", "/admin/dlq/purge", {"confirm": dlq.name})
    assert (status, body["purged"], body["remaining"]) == (200, 1, 0)
