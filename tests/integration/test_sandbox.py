"""Test mode (issue 15, item 2) on real parts: API → PostgreSQL + SQS (moto) → worker → sandbox.

The SMTP provider is a real aiosmtpd server: test traffic must never reach it.
The simulated outcomes of sim.mailroom.invalid addresses come back through
services/feedback.py, the path the provider webhooks take.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import text

from mailroom.adapters.breakers import ProviderBreakers
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.feedback import (
    DeliveryEvent,
    FeedbackEventType,
    RejectReason,
    SuppressionReason,
)
from mailroom.domain.tenancy import QuotaPeriod
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services import clients, feedback
from tests.events import FakeLambdaContext, load_event, request_event, with_body, with_headers
from tests.integration.conftest import SmtpSink, free_port, sqs_event
from tests.provider_fakes import RecordingSignals

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-with-enough-entropy"
SIM = "sim.mailroom.invalid"
PROPS = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())


class Stack:
    """Send, status and admin APIs, the worker, and the real services the fixtures started."""

    def __init__(
        self, database: Database, redis_url: str, queue_url: str, smtp_port: int, **settings: Any
    ) -> None:
        self.database = database
        self.queue_url = queue_url
        self.settings = Settings(
            database_url=database.engine.url.render_as_string(hide_password=False),
            redis_url=redis_url,
            queue_url=queue_url,
            templates_dir=TEMPLATES,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            max_send_attempts=2,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            **settings,
        )
        self.services: Services = bootstrap(self.settings)
        self.api = create_api(
            [send_routes(lambda: self.services), status_routes(lambda: self.services)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
            client_gate=ClientGate(lambda: self.services),
        )
        self.admin_api = create_api(
            admin_routes(lambda: self.services),
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )
        self.sqs = boto3.client("sqs", region_name="us-east-1")

    def admin(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        event = request_event(
            method, path, query=query, body=body, Authorization=f"Bearer {ADMIN_TOKEN}"
        )
        response = self.admin_api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def create_client(self, **fields: Any) -> dict[str, Any]:
        name = f"acme-{uuid.uuid4().hex[:8]}"
        status, body = self.admin("POST", "/admin/clients", {"name": name, **fields})
        assert status == 201, body
        return body

    def send(self, client: dict[str, Any], **fields: Any) -> tuple[int, dict[str, Any]]:
        event = load_event("send/send-welcome")
        with_headers(event, X_Api_Key=client["api_key"], X_Api_Secret=client["api_secret"])
        with_body(event, {"template": "welcome", "props": PROPS, **fields})
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def get(self, client: dict[str, Any], path: str) -> dict[str, Any]:
        event = load_event("status/get-message")
        event["path"] = path
        event["pathParameters"] = {"message_id": path.split("/")[3]} if path.count("/") > 2 else {}
        with_headers(event, X_Api_Key=client["api_key"], X_Api_Secret=client["api_secret"])
        response = self.api.resolve(event, FakeLambdaContext())
        assert response["statusCode"] == 200, response
        return dict(json.loads(response["body"]))

    def status(self, client: dict[str, Any], message_id: str) -> dict[str, Any]:
        return self.get(client, f"/v1/messages/{message_id}")

    def run_worker(self) -> list[dict[str, Any]]:
        """Worker invocations until the queue is empty, as the Lambda event source would.

        Records are deleted whatever the answer (a retry is not waited for);
        the answers come back.
        """
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        answers: list[dict[str, Any]] = []
        while True:
            received = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not received:
                return answers
            event = sqs_event(received, arn["Attributes"]["QueueArn"])
            answers.append(
                process_send_batch(event, FakeLambdaContext("mailroom-worker"), self.services)
            )
            for message in received:
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )

    def message_rows(self, client_id: str) -> int:
        with self.database.engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM messages WHERE client_id = :id"), {"id": client_id}
                ).scalar_one()
            )


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(database, redis_url, queue_url, smtp_sink.port)


def _events(view: dict[str, Any]) -> list[str]:
    return [event["type"] for event in view["events"]]


def _recipients(view: dict[str, Any]) -> dict[str, str]:
    return {r["address"]: r["status"] for r in view["recipients"]}


def test_each_sandbox_address_produces_its_event_and_nothing_reaches_smtp(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a client in sandbox mode, whose live key therefore acts in test mode
    client = stack.create_client(sandbox_mode=True)
    assert client["sandbox_mode"] is True
    sent: dict[str, str] = {}
    for to in (
        f"delivered@{SIM}",
        f"bounced+ci-run-1@{SIM}",
        f"complained@{SIM}",
        f"delayed@{SIM}",
        f"Nobody Special <whatever@{SIM}>",
        "ada@example.com",
    ):
        status, body = stack.send(client, to=to)
        assert status == 202, body
        assert body["mode"] == "test"
        sent[to] = body["id"]
    # WHEN the real worker takes them off the queue
    assert stack.run_worker() == [{"batchItemFailures": []}]
    # THEN the SMTP server configured as the provider received nothing at all
    assert smtp_sink.received == []
    views = {to: stack.status(client, message_id) for to, message_id in sent.items()}
    for view in views.values():
        assert view["mode"] == "test"
        assert view["provider"] == "sandbox"
        assert view["provider_msg_id"].startswith("sandbox-")
    # AND each address produced its outcome, applied as a provider webhook's would be
    delivered = views[f"delivered@{SIM}"]
    assert delivered["status"] == "delivered"
    assert _events(delivered) == ["accepted", "sent", "delivered"]
    assert _recipients(delivered) == {f"delivered@{SIM}": "delivered"}

    bounced = views[f"bounced+ci-run-1@{SIM}"]
    assert bounced["status"] == "bounced"
    assert _events(bounced) == ["accepted", "sent", "bounced"]
    (recipient,) = bounced["recipients"]
    assert (recipient["status"], recipient["reject_reason"]) == ("bounced", "bounced")
    assert recipient["response"].startswith("550 5.1.1")

    complained = views[f"complained@{SIM}"]
    assert complained["status"] == "spam"
    assert _events(complained) == ["accepted", "sent", "delivered", "complained"]

    delayed = views[f"delayed@{SIM}"]
    assert delayed["status"] == "delivered"
    assert _events(delayed) == ["accepted", "sent", "deferred", "delivered"]

    for other in (f"Nobody Special <whatever@{SIM}>", "ada@example.com"):
        assert views[other]["status"] == "delivered"
        assert _events(views[other]) == ["accepted", "sent", "delivered"]
    # AND the events went through the feedback path: stored as provider events
    with SqlUnitOfWork(stack.database) as uow:
        stored = uow.feedback.for_message(uuid.UUID(sent[f"delayed@{SIM}"]))
    assert [(e.provider, e.event_type) for e in stored] == [
        ("sandbox", FeedbackEventType.DEFERRED),
        ("sandbox", FeedbackEventType.DELIVERED),
    ]
    # AND the bounce and the complaint suppressed their addresses for this
    # client's test mail only: flagged, client-scoped (a hard bounce is global
    # in live mail)
    with SqlUnitOfWork(stack.database) as uow:
        entries = {
            s.address: s
            for s in uow.suppressions.active_for(
                uuid.UUID(client["id"]),
                [f"bounced+ci-run-1@{SIM}", f"complained@{SIM}"],
                datetime.now(UTC),
                include_test=True,
            )
        }
    assert {a: (s.reason, s.is_test, str(s.client_id)) for a, s in entries.items()} == {
        f"bounced+ci-run-1@{SIM}": (SuppressionReason.HARD_BOUNCE, True, client["id"]),
        f"complained@{SIM}": (SuppressionReason.COMPLAINT, True, client["id"]),
    }
    # AND the message list and the events view say test too
    listing = stack.get(client, "/v1/messages")
    assert {m["mode"] for m in listing["messages"]} == {"test"}
    events = stack.get(client, f"/v1/messages/{sent['ada@example.com']}/events")
    assert events["mode"] == "test"


def test_suppressed_address_is_refused_or_dropped_as_a_suppressed_recipient_would_be(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    client = stack.create_client(sandbox_mode=True)
    # WHEN suppressed@ is the only addressee: the send is refused as suppressed
    status, body = stack.send(client, to=f"suppressed+x@{SIM}")
    assert (status, body["error"]["code"]) == (422, "suppressed")
    refused = stack.status(client, body["error"]["details"][0]["message_id"])
    assert (refused["status"], refused["mode"]) == ("failed", "test")
    assert _recipients(refused) == {f"suppressed+x@{SIM}": "suppressed"}
    # WHEN it is one recipient among others: it is dropped, the rest is sent
    status, body = stack.send(client, to=f"delivered@{SIM}", cc=f"suppressed@{SIM}")
    assert status == 202, body
    assert stack.run_worker() == [{"batchItemFailures": []}]
    view = stack.status(client, body["id"])
    assert _recipients(view) == {f"delivered@{SIM}": "delivered", f"suppressed@{SIM}": "suppressed"}
    assert _events(view) == ["accepted", "recipients_suppressed", "sent", "delivered"]
    assert smtp_sink.received == []


def test_test_mail_never_touches_real_providers_or_their_breakers(
    database: Database, redis_url: str, queue_url: str
) -> None:
    # GIVEN nothing listening where the SMTP server should be, and a breaker
    # that opens at the first failure
    stack = Stack(database, redis_url, queue_url, free_port(), breaker_failure_threshold=1)
    breakers = ProviderBreakers.in_redis(
        redis_url, RecordingSignals(), failure_threshold=1, cooldown_seconds=30, success_threshold=1
    )
    client = stack.create_client(sandbox_mode=True)
    ids = [stack.send(client, to=f"delivered+{n}@{SIM}")[1]["id"] for n in range(6)]
    # WHEN the worker sends them
    assert stack.run_worker() == [{"batchItemFailures": []}]
    # THEN every one was recorded by the sandbox, and the SMTP breaker heard of none
    assert {stack.status(client, i)["status"] for i in ids} == {"delivered"}
    assert breakers.state("smtp") == "closed"
    # AND once live mail has opened the breaker, test mail still goes through
    stack.admin("PATCH", f"/admin/clients/{client['id']}", {"sandbox_mode": False})
    _, live = stack.send(client, to="ada@example.com")
    stack.run_worker()
    assert breakers.state("smtp") == "open"
    assert stack.status(client, live["id"])["status"] == "queued"
    stack.admin("PATCH", f"/admin/clients/{client['id']}", {"sandbox_mode": True})
    _, test = stack.send(client, to=f"delivered@{SIM}")
    assert stack.run_worker() == [{"batchItemFailures": []}]
    assert stack.status(client, test["id"])["status"] == "delivered"


def test_test_suppressions_never_block_live_mail(stack: Stack, smtp_sink: SmtpSink) -> None:
    # GIVEN a client's test message to a real address, and a live message of
    # the same client to it, accepted before the test feedback came
    client = stack.create_client(sandbox_mode=True)
    _, test_sent = stack.send(client, to="ada@example.com")
    stack.run_worker()
    stack.admin("PATCH", f"/admin/clients/{client['id']}", {"sandbox_mode": False})
    status, live_queued = stack.send(client, to="ada@example.com")
    assert (status, live_queued["mode"]) == (202, "live")
    # WHEN test traffic's feedback hard-bounces that address (the real feedback path)
    provider_msg_id = stack.status(client, test_sent["id"])["provider_msg_id"]
    feedback.record_delivery_events(
        stack.services.uow(),
        [
            DeliveryEvent(
                provider="sandbox",
                event_type=FeedbackEventType.BOUNCED,
                event_id="hard-bounce-1",
                timestamp=datetime.now(UTC),
                message_id=provider_msg_id,
                recipient="ada@example.com",
                reject_reason=RejectReason.BOUNCED,
            )
        ],
    )
    # THEN the entry is a test one for this client only
    with SqlUnitOfWork(stack.database) as uow:
        assert (
            uow.suppressions.active_for(
                uuid.UUID(client["id"]), ["ada@example.com"], datetime.now(UTC)
            )
            == []
        )
        (entry,) = uow.suppressions.active_for(
            uuid.UUID(client["id"]), ["ada@example.com"], datetime.now(UTC), include_test=True
        )
    assert (entry.is_test, str(entry.client_id)) == (True, client["id"])
    status, listed = stack.admin("GET", "/admin/suppressions", query={"address": "ada@example.com"})
    assert status == 200, listed
    assert [(e["mode"], e["scope"]) for e in listed["suppressions"]] == [("test", "client")]
    # AND live mail is not blocked: neither the message queued before (the
    # worker's screening) nor a new one (the API's), nor another client's
    status, live_new = stack.send(client, to="ada@example.com")
    assert status == 202, live_new
    other = stack.create_client()
    assert stack.send(other, to="ada@example.com")[0] == 202
    stack.run_worker()
    assert len(smtp_sink.received) == 3
    assert stack.status(client, live_queued["id"])["status"] == "sent"
    assert stack.status(client, live_new["id"])["status"] == "sent"
    # AND test mail of that client does see it
    stack.admin("PATCH", f"/admin/clients/{client['id']}", {"sandbox_mode": True})
    status, body = stack.send(client, to="ada@example.com")
    assert (status, body["error"]["code"]) == (422, "suppressed")


def test_test_sends_are_not_charged_to_the_quota(stack: Stack) -> None:
    # GIVEN a client with a quota of one message, in sandbox mode
    client = stack.create_client(quota_limit=1, sandbox_mode=True)
    # WHEN it sends three test messages
    for _ in range(3):
        status, body = stack.send(client, to=f"delivered@{SIM}")
        assert (status, body["mode"]) == (202, "test")
    # THEN its live quota is untouched: one live send passes, the next is refused
    status, body = stack.admin("PATCH", f"/admin/clients/{client['id']}", {"sandbox_mode": False})
    assert (status, body["sandbox_mode"]) == (200, False)
    status, body = stack.send(client, to="ada@example.com")
    assert (status, body["mode"]) == (202, "live")
    status, body = stack.send(client, to="ada@example.com")
    assert (status, body["error"]["code"]) == (429, "quota_exceeded")
    # AND reconciling the counter from the messages table counts the live one only
    period = QuotaPeriod.containing(datetime.now(UTC))
    with SqlUnitOfWork(stack.database) as uow:
        count = uow.messages.count_accepted(uuid.UUID(client["id"]), period.start, period.end)
    assert count == 1


def test_a_live_caller_to_the_sandbox_domain_gets_the_special_use_422(stack: Stack) -> None:
    client = stack.create_client()
    # WHEN a live caller sends to sim.mailroom.invalid, in any field
    status, sim = stack.send(client, to=["ada@example.com", f"bounced@{SIM}"])
    # THEN the answer is the one any special-use domain gets, and nothing is written
    status_other, other = stack.send(client, to=["ada@example.com", "bounced@elsewhere.invalid"])
    assert status == status_other == 422
    assert sim["error"]["code"] == other["error"]["code"] == "validation_error"
    assert sim["error"]["details"] == other["error"]["details"]
    assert sim["error"]["message"] == other["error"]["message"]
    status, body = stack.send(client, to="ada@example.com", cc=f"delivered@{SIM}")
    assert (status, body["error"]["details"][0]["field"]) == (422, "cc.0")
    assert stack.send(client, to="ada@example.com", **{"from": f"x@{SIM}"})[0] == 422
    assert stack.message_rows(client["id"]) == 0


def test_sandbox_mode_is_set_by_the_admin_api_and_audited(stack: Stack) -> None:
    client = stack.create_client()
    assert client["sandbox_mode"] is False
    assert stack.send(client, to="ada@example.com")[1]["mode"] == "live"
    # WHEN an operator turns sandbox mode on: the next request is in test mode
    status, body = stack.admin("PATCH", f"/admin/clients/{client['id']}", {"sandbox_mode": True})
    assert (status, body["sandbox_mode"]) == (200, True)
    assert stack.send(client, to="ada@example.com")[1]["mode"] == "test"
    assert stack.admin("GET", f"/admin/clients/{client['id']}")[1]["sandbox_mode"] is True
    # AND the change is in the audit log
    with SqlUnitOfWork(stack.database) as uow:
        entries = clients.audit_trail(uow, target_id=client["id"], after_seq=None, limit=10)
    update = [e for e in entries if e.action == "client.update"][-1]
    assert update.before is not None
    assert update.after is not None
    assert (update.before["sandbox_mode"], update.after["sandbox_mode"]) == (False, True)
    assert update.actor.startswith("admin")


def test_a_test_key_sends_in_test_mode_beside_the_clients_live_key(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    # GIVEN a live client and a test key (mr_test_) made for it by an operator
    client = stack.create_client()
    status, made = stack.admin(
        "POST",
        f"/admin/clients/{client['id']}/api-keys",
        {"name": "ci", "scopes": ["email:send", "email:read"], "mode": "test"},
    )
    assert status == 201, made
    assert made["key"].startswith("mr_test_")
    test_key = {"api_key": made["key"], "api_secret": made["secret"]}
    # WHEN the test key sends to a simulated bounce and the live key to a real address
    status, bounced = stack.send(test_key, to=f"bounced@{SIM}")
    assert (status, bounced["mode"]) == (202, "test")
    status, live = stack.send(client, to="ada@example.com")
    assert (status, live["mode"]) == (202, "live")
    assert stack.run_worker() == [{"batchItemFailures": []}]
    # THEN the test message bounced through the sandbox and only the live one reached SMTP
    view = stack.status(test_key, bounced["id"])
    assert (view["mode"], view["provider"], view["status"]) == ("test", "sandbox", "bounced")
    assert stack.status(client, live["id"])["status"] == "sent"
    assert len(smtp_sink.received) == 1
    # AND the live key may not use the sandbox domain
    assert stack.send(client, to=f"bounced@{SIM}")[0] == 422
