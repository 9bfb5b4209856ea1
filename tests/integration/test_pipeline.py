"""The whole path on real parts: API handler → PostgreSQL + SQS (moto) → worker → SMTP."""

from __future__ import annotations

import email
import json
import uuid
from email import policy
from pathlib import Path
from typing import Any

import boto3
import pytest

from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.model import EventType, MessageStatus
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services.clients import RegisteredClient, register_client
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.integration.conftest import SmtpSink, free_port, sqs_event

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


class Stack:
    """Mailroom wired to the real services the fixtures started."""

    def __init__(self, database_url: str, redis_url: str, queue_url: str, smtp_port: int) -> None:
        self.queue_url = queue_url
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            queue_url=queue_url,
            templates_dir=TEMPLATES,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            max_send_attempts=2,
        )
        self.services: Services = bootstrap(self.settings)
        self.client: RegisteredClient = register_client(
            self.services.uow(), self.services.hasher, name="acme"
        )
        self.api = create_api(
            [send_routes(lambda: self.services), status_routes(lambda: self.services)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )
        self.sqs = boto3.client("sqs", region_name="us-east-1")

    def send(self, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        event = load_event("send/send-welcome")
        with_headers(event, X_Api_Key=self.client.api_key, X_Api_Secret=self.client.api_secret)
        if body is not None:
            with_body(event, body)
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def status(self, message_id: str) -> dict[str, Any]:
        event = load_event("status/get-message")
        event["path"] = f"/v1/messages/{message_id}"
        event["pathParameters"] = {"message_id": message_id}
        with_headers(event, X_Api_Key=self.client.api_key, X_Api_Secret=self.client.api_secret)
        response = self.api.resolve(event, FakeLambdaContext())
        assert response["statusCode"] == 200, response
        return dict(json.loads(response["body"]))

    def run_worker_once(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One worker invocation on what the queue holds; the answer and the raw messages."""
        received = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        assert received, "the API put nothing on the queue"
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        event = sqs_event(received, arn["Attributes"]["QueueArn"])
        answer = process_send_batch(event, FakeLambdaContext("mailroom-worker"), self.services)
        return answer, received


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(database_url_of(database), redis_url, queue_url, smtp_sink.port)


def database_url_of(database: Database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


def test_a_sent_message_arrives_and_reads_sent(stack: Stack, smtp_sink: SmtpSink) -> None:
    # GIVEN the welcome template's sample request, accepted by the API
    status, accepted = stack.send()
    assert status == 202
    # WHEN the worker takes the batch off the queue
    result, _ = stack.run_worker_once()
    # THEN nothing failed, the SMTP server got one well-formed email...
    assert result == {"batchItemFailures": []}
    (mail,) = smtp_sink.received
    parsed = email.message_from_bytes(mail.data, policy=policy.default)
    assert parsed["Subject"] == "Welcome to Mailroom, Ada!"
    assert parsed["To"] == "ada@example.com"
    assert parsed.get_content_type() == "multipart/alternative"
    html = parsed.get_body(preferencelist=("html",))
    assert html is not None
    assert 'style="' in html.get_content()
    # ...and the status API tells the story, trace id included
    view = stack.status(accepted["id"])
    assert view["status"] == "sent"
    assert view["provider"] == "smtp"
    assert f"<{view['provider_msg_id']}>" == parsed["Message-ID"]
    assert view["attempts"] == 1
    assert view["trace_id"] == "1-6741a2b3-5c1f0e2d9a8b7c6d5e4f3a2b"
    assert [e["type"] for e in view["events"]] == ["accepted", "sent"]


def test_the_trace_id_travels_as_a_message_attribute(stack: Stack) -> None:
    stack.send()
    (message,) = stack.sqs.receive_message(
        QueueUrl=stack.queue_url, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"]
    assert message["MessageAttributes"]["trace_id"]["StringValue"] == (
        "1-6741a2b3-5c1f0e2d9a8b7c6d5e4f3a2b"
    )


def test_smtp_down_is_retried_then_failed(
    database: Database, redis_url: str, queue_url: str
) -> None:
    # GIVEN nothing listening where the SMTP server should be
    stack = Stack(database_url_of(database), redis_url, queue_url, free_port())
    _, accepted = stack.send()
    # WHEN the worker tries: the record is reported failed for redelivery
    first, received = stack.run_worker_once()
    assert first["batchItemFailures"] == [{"itemIdentifier": received[0]["MessageId"]}]
    view = stack.status(accepted["id"])
    assert (view["status"], view["attempts"]) == ("queued", 1)
    # AND once the attempts (2 here) run out, the message ends failed, with why
    # (made visible again at once instead of after the visibility timeout)
    stack.sqs.change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=received[0]["ReceiptHandle"], VisibilityTimeout=0
    )
    second, _ = stack.run_worker_once()
    assert second == {"batchItemFailures": []}
    view = stack.status(accepted["id"])
    assert view["status"] == "failed"
    assert "connection failed" in view["last_error"]
    # each failed try of a provider is its own event, before the attempt's outcome
    assert [e["type"] for e in view["events"]] == [
        "accepted",
        "provider_failed",
        "attempt_failed",
        "provider_failed",
        "failed",
    ]


def test_a_queue_outage_answers_503_and_marks_the_row(
    database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN a queue URL that SQS does not know
    missing = f"{aws}/123456789012/no-such-queue"
    stack = Stack(database_url_of(database), redis_url, missing, smtp_sink.port)
    # WHEN a message is sent
    status, body = stack.send()
    # THEN 503, and the row exists as failed so the caller can see why
    assert (status, body["error"]["code"]) == (503, "enqueue_failed")
    message_id = body["error"]["details"][0]["message_id"]
    with SqlUnitOfWork(database) as uow:
        stored = uow.messages.get(uuid.UUID(message_id))
        assert stored is not None
        events = uow.messages.events(stored.id)
    assert stored.status is MessageStatus.FAILED
    assert [e.type for e in events] == [EventType.ACCEPTED, EventType.ENQUEUE_FAILED]


def test_health_checks_the_real_services(stack: Stack, database: Database) -> None:
    response = stack.api.resolve(load_event("status/health"), FakeLambdaContext())
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["checks"] == {"postgres": "ok", "redis": "ok"}

    down = bootstrap(
        stack.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    )
    api = create_api([status_routes(lambda: down)], max_request_bytes=lambda: 1024)
    response = api.resolve(load_event("status/health"), FakeLambdaContext())
    body = json.loads(response["body"])
    assert response["statusCode"] == 503
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("error:")
