"""Issue 16: VERP over a real SMTP socket, bounces and complaints fed back, on PostgreSQL and moto.

The bounce bodies are the real samples of tests/fixtures/bounces; each is
delivered to the VERP address the worker actually used for a message (the
envelope recipient), which is the only re-addressing done.
"""

from __future__ import annotations

import json
import shutil
import uuid
from email import message_from_bytes
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, text

from mailroom.adapters.db.tables import (
    InboundMailRow,
    MessageEventRow,
    MessageRecipientRow,
    MessageRow,
    SoftBounceRow,
    SuppressionRow,
)
from mailroom.adapters.db.unit_of_work import Database
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services.clients import RegisteredClient, register_client
from mailroom.services.inbound import InboundResult, receive_inbound_mail
from mailroom.services.templates import upload_template
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.integration.conftest import SmtpSink, sqs_event

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
FIXTURES = ROOT / "tests" / "fixtures" / "bounces"
SAMPLE = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())
KEYS = "k1:" + "S" * 43


class Stack:
    def __init__(
        self,
        database: Database,
        redis_url: str,
        queue_url: str,
        sink: SmtpSink,
        **overrides: Any,
    ) -> None:
        self.database = database
        self.queue_url = queue_url
        self.sink = sink
        self.settings = Settings(
            database_url=database.engine.url.render_as_string(hide_password=False),
            redis_url=redis_url,
            queue_url=queue_url,
            templates_dir=overrides.pop("templates_dir", TEMPLATES),
            smtp_host=sink.host,
            smtp_port=sink.port,
            max_send_attempts=2,
            bounce_signing_keys=SecretStr(KEYS),
            # The platform's bounce domain: these clients send from a domain
            # they have not verified, so their return path is on it.
            bounce_domain=overrides.pop("bounce_domain", "bounces.example.com"),
            public_base_url="https://mail.example.com",
            soft_bounce_limit=2,
            **overrides,
        )
        self.services: Services = bootstrap(self.settings)
        self.client: RegisteredClient = register_client(
            self.services.uow(), self.services.hasher, name=f"acme-{uuid.uuid4().hex[:6]}"
        )
        self.api = create_api(
            [send_routes(lambda: self.services), status_routes(lambda: self.services)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )

    def send(self, to: str | list[str], **extra: Any) -> uuid.UUID:
        event = load_event("send/send-welcome")
        with_headers(event, X_Api_Key=self.client.api_key, X_Api_Secret=self.client.api_secret)
        with_body(event, {"template": "welcome", "to": to, "props": SAMPLE, **extra})
        response = self.api.resolve(event, FakeLambdaContext())
        assert response["statusCode"] == 202, response["body"]
        message_id = uuid.UUID(json.loads(response["body"])["id"])
        self.run_worker_once()
        return message_id

    def post_send(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /v1/send as this client; the answer, nothing run."""
        event = load_event("send/send-welcome")
        with_headers(event, X_Api_Key=self.client.api_key, X_Api_Secret=self.client.api_secret)
        with_body(event, body)
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def run_worker_once(self) -> None:
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
        process_send_batch(event, FakeLambdaContext("mailroom-worker"), self.services)

    def bounce(self, fixture: str, to: str) -> InboundResult:
        raw = (FIXTURES / fixture).read_bytes()
        return receive_inbound_mail(self.services.uow(), raw, [to], self.services.inbound_policy)

    def status_of(self, message_id: uuid.UUID) -> str:
        with self.database.engine.connect() as connection:
            return str(
                connection.execute(
                    select(MessageRow.status).where(MessageRow.id == message_id)
                ).scalar_one()
            )

    def suppressions(self) -> list[tuple[str, str, bool, bool]]:
        """(address, reason, global, expires)."""
        with self.database.engine.connect() as connection:
            rows = connection.execute(
                select(
                    SuppressionRow.address,
                    SuppressionRow.reason,
                    SuppressionRow.client_id,
                    SuppressionRow.expires_at,
                )
            ).all()
        return sorted((a, r, c is None, e is not None) for a, r, c, e in rows)

    def recipient_status(self, message_id: uuid.UUID, address: str) -> str | None:
        with self.database.engine.connect() as connection:
            return connection.execute(
                select(MessageRecipientRow.status).where(
                    MessageRecipientRow.message_id == message_id,
                    MessageRecipientRow.address == address,
                )
            ).scalar_one_or_none()

    def count(self, table: Any) -> int:
        with self.database.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())

    def inbound(self) -> list[tuple[str, uuid.UUID | None]]:
        with self.database.engine.connect() as connection:
            rows = connection.execute(
                select(InboundMailRow.outcome, InboundMailRow.message_id).order_by(
                    InboundMailRow.id
                )
            ).all()
        return [(outcome, message_id) for outcome, message_id in rows]


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    with database.engine.begin() as connection:
        # Not tied to messages by a foreign key: the shared fixture's TRUNCATE misses them.
        connection.execute(text("TRUNCATE inbound_mail, soft_bounces"))
    return Stack(database, redis_url, queue_url, smtp_sink)


def test_smtp_mail_goes_out_with_a_signed_verp_return_path(stack: Stack) -> None:
    message_id = stack.send("ada@example.com")
    (mail,) = stack.sink.received
    assert mail.envelope_from.startswith(f"b+{message_id.hex}.k1-")
    assert mail.envelope_from.endswith("@bounces.example.com")
    parsed = message_from_bytes(mail.data)
    # The From header is untouched; Feedback-ID names the template and client.
    assert parsed["From"] == "Mailroom <noreply@example.com>"
    assert parsed["Feedback-ID"].startswith("welcome:")


def test_a_real_postfix_dsn_to_the_verp_address_bounces_the_message_once(stack: Stack) -> None:
    # GIVEN a message sent through the SMTP sink
    message_id = stack.send("ada@example.com")
    return_path = stack.sink.received[0].envelope_from
    # WHEN Postfix's DSN comes back to its return path (twice: a redelivery)
    first = stack.bounce("flufl-dsn_10.eml", return_path)
    events_after_first = stack.count(MessageEventRow)
    second = stack.bounce("flufl-dsn_10.eml", return_path)
    # THEN the message bounced, the recipient is globally suppressed, once
    assert (first.outcome, first.applied, first.duplicate) == ("applied", 1, False)
    assert second.duplicate
    assert stack.count(MessageEventRow) == events_after_first
    assert stack.status_of(message_id) == "bounced"
    assert stack.recipient_status(message_id, "ada@example.com") == "bounced"
    assert stack.suppressions() == [("ada@example.com", "hard_bounce", True, False)]
    assert stack.inbound() == [("applied", message_id)]


def test_a_verp_address_rewritten_by_a_forwarder_still_matches(stack: Stack) -> None:
    message_id = stack.send("ada@example.com")
    local = stack.sink.received[0].envelope_from.partition("@")[0]
    srs = f"SRS0=HhJ8=TT=bounces.example.com={local}@forwarder.example.org"
    result = stack.bounce("sisimai-us-google-02.eml", srs)
    assert result.outcome == "applied"
    assert stack.status_of(message_id) == "bounced"


def test_a_bad_signature_or_no_token_is_kept_for_review_and_changes_nothing(
    stack: Stack,
) -> None:
    message_id = stack.send("ada@example.com")
    return_path = stack.sink.received[0].envelope_from
    forged = return_path[:-25] + ("a" if return_path[-25] != "a" else "b") + return_path[-24:]
    assert forged != return_path
    events = stack.count(MessageEventRow)
    assert stack.bounce("flufl-dsn_10.eml", forged).outcome == "bad_signature"
    assert stack.bounce("flufl-dsn_10.eml", "postmaster@bounces.example.com").outcome == (
        "unmatched"
    )
    assert stack.status_of(message_id) == "sent"
    assert stack.suppressions() == []
    assert stack.count(MessageEventRow) == events
    assert stack.inbound() == [("bad_signature", None), ("unmatched", None)]


def test_an_arf_complaint_suppresses_for_that_client_only(stack: Stack) -> None:
    message_id = stack.send("ada@example.com")
    result = stack.bounce("sisimai-arf-02.eml", stack.sink.received[0].envelope_from)
    assert result.outcome == "applied"
    assert stack.status_of(message_id) == "spam"
    assert stack.suppressions() == [("ada@example.com", "complaint", False, False)]


def test_soft_bounces_in_a_row_suppress_with_an_expiry(stack: Stack) -> None:
    # GIVEN two messages to one address, each soft-bounced (4.4.7), limit 2
    first = stack.send("ada@example.com")
    assert stack.bounce("flufl-dsn_02.eml", stack.sink.received[0].envelope_from).applied == 1
    # THEN one soft bounce suppresses nothing
    assert stack.suppressions() == []
    assert stack.status_of(first) == "bounced"
    stack.send("ada@example.com")
    stack.bounce("flufl-dsn_02.eml", stack.sink.received[1].envelope_from)
    # THEN the second in a row does, for a while, and the count restarts
    assert stack.suppressions() == [("ada@example.com", "soft_bounce", True, True)]
    assert stack.count(SoftBounceRow) == 0


def test_a_delay_warning_and_an_auto_reply_change_no_status(stack: Stack) -> None:
    message_id = stack.send("ada@example.com")
    return_path = stack.sink.received[0].envelope_from
    delayed = stack.bounce("flufl-dsn_05.eml", return_path)
    assert delayed.outcome == "applied"
    assert stack.recipient_status(message_id, "ada@example.com") == "deferred"
    # A real Zimbra vacation reply (fixture README), sent to the VERP address.
    auto = stack.bounce("sisimai-rfc3834-06.eml", return_path)
    assert auto.outcome == "auto_reply"
    assert stack.status_of(message_id) == "sent"
    assert stack.suppressions() == []


def test_a_5xx_at_rcpt_is_a_bounce_too(stack: Stack) -> None:
    # GIVEN one recipient the relay refuses with 550 and one it takes
    partly = stack.send(["ada@example.com", "reject-bob@example.com"])
    # THEN the message went out to Ada, and Bob's refusal is a bounce: the
    # message reads "bounced", as with a provider reporting one recipient's.
    assert len(stack.sink.received) == 1
    assert stack.status_of(partly) == "bounced"
    assert stack.recipient_status(partly, "reject-bob@example.com") == "bounced"
    assert stack.recipient_status(partly, "ada@example.com") is None
    # AND a message whose only recipient is refused
    wholly = stack.send("reject-cy@example.com")
    assert stack.status_of(wholly) == "failed"
    assert stack.recipient_status(wholly, "reject-cy@example.com") == "bounced"
    assert stack.suppressions() == [
        ("reject-bob@example.com", "hard_bounce", True, False),
        ("reject-cy@example.com", "hard_bounce", True, False),
    ]


def test_mail_to_the_list_unsubscribe_mailto_unsubscribes(stack: Stack) -> None:
    message_id = stack.send("ada@example.com", bulk=True)
    header = message_from_bytes(stack.sink.received[0].data)["List-Unsubscribe"]
    mailto = header.split("<mailto:")[1].split("?")[0]
    raw = b"From: ada@example.com\r\nSubject: unsubscribe\r\n\r\n\r\n"
    result = receive_inbound_mail(
        stack.services.uow(), raw, [mailto], stack.services.inbound_policy
    )
    assert result.outcome == "unsubscribed"
    assert stack.suppressions() == [("ada@example.com", "unsubscribe", False, False)]
    assert stack.status_of(message_id) == "sent"


def _unsubscribe_request(token: str, method: str, body: str | None = None) -> dict[str, Any]:
    event = load_event("status/get-message")
    event["httpMethod"] = method
    event["path"] = event["resource"] = f"/u/{token}"
    event["pathParameters"] = {"token": token}
    event["resource"] = "/u/{token}"
    event["headers"] = {"Content-Type": "application/x-www-form-urlencoded"}
    event["multiValueHeaders"] = {"Content-Type": ["application/x-www-form-urlencoded"]}
    event["body"] = body
    return event


def _inbound_app(stack: Stack) -> Any:
    from mailroom.entrypoints.inbound import inbound_function_routes
    from mailroom.entrypoints.webhooks import create_webhooks_api

    return create_webhooks_api(
        inbound_function_routes(lambda: stack.services), max_request_bytes=lambda: 4096
    )


def test_one_click_unsubscribe_post_suppresses_once_and_a_get_changes_nothing(
    stack: Stack,
) -> None:
    # GIVEN a bulk message and the link in its List-Unsubscribe
    message_id = stack.send("ada@example.com", bulk=True)
    header = message_from_bytes(stack.sink.received[0].data)["List-Unsubscribe"]
    token = header.split("/u/")[1].split(">")[0]
    app = _inbound_app(stack)
    # WHEN a scanner GETs it
    page = app.resolve(_unsubscribe_request(token, "GET"), FakeLambdaContext())
    # THEN a page with a button, and nothing written
    assert page["statusCode"] == 200
    assert f'action="/u/{token}"' in page["body"]
    assert stack.suppressions() == []
    # WHEN the mail client posts (twice)
    for _ in range(2):
        answer = app.resolve(
            _unsubscribe_request(token, "POST", "List-Unsubscribe=One-Click"), FakeLambdaContext()
        )
        # THEN 200, empty, no redirect, no cookie
        assert answer["statusCode"] == 200
        assert answer["body"] == ""
        headers = {k.lower() for k in (answer.get("headers") or {})}
        headers |= {k.lower() for k in (answer.get("multiValueHeaders") or {})}
        assert not headers & {"location", "set-cookie"}
    assert stack.suppressions() == [("ada@example.com", "unsubscribe", False, False)]
    with stack.database.engine.connect() as connection:
        types = connection.execute(
            select(MessageEventRow.type).where(MessageEventRow.message_id == message_id)
        ).scalars()
        assert list(types).count("unsubscribed") == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_forged_unsubscribe_token_is_404_and_writes_nothing(stack: Stack, method: str) -> None:
    stack.send("ada@example.com", bulk=True)
    header = message_from_bytes(stack.sink.received[0].data)["List-Unsubscribe"]
    token = header.split("/u/")[1].split(">")[0]
    forged = token[:-1] + ("a" if token[-1] != "a" else "b")
    app = _inbound_app(stack)
    events = stack.count(MessageEventRow)
    for bad in (forged, "k1.notatoken", "x" * 80):
        answer = app.resolve(_unsubscribe_request(bad, method, "x"), FakeLambdaContext())
        assert answer["statusCode"] == 404, answer
        assert json.loads(answer["body"])["error"]["code"] == "unsubscribe_link_not_found"
    assert stack.suppressions() == []
    assert stack.count(MessageEventRow) == events


def test_an_ses_receipt_event_reads_the_mail_from_s3(
    database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN SES stored a real bounce for a message in S3 and invoked the function
    from mailroom.adapters.inbound_mail import read_s3_object
    from mailroom.entrypoints.inbound import is_ses_receipt_event, process_ses_event

    bucket = f"inbound-{uuid.uuid4().hex[:8]}"
    stack = Stack(database, redis_url, queue_url, smtp_sink, inbound_bucket=bucket)
    message_id = stack.send("ada@example.com")
    return_path = stack.sink.received[0].envelope_from
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    event = load_event("inbound/ses-email-receiving")
    record = event["Records"][0]["ses"]
    s3.put_object(
        Bucket=bucket,
        Key=f"inbound/{record['mail']['messageId']}",
        Body=(FIXTURES / "flufl-dsn_11.eml").read_bytes(),
    )
    record["receipt"]["recipients"] = [return_path]
    # WHEN the function handles it
    assert is_ses_receipt_event(event)
    outcomes = process_ses_event(event, stack.services, read_s3_object)
    # THEN the bounce is applied to its message
    assert outcomes == {"applied": 1}
    assert stack.status_of(message_id) == "bounced"


def test_admin_lists_unmatched_mail_for_review(
    database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink
) -> None:
    import base64
    import hashlib

    from mailroom.entrypoints.admin import admin_routes

    token = "an-admin-token-of-at-least-thirty-two-characters"
    stack = Stack(
        database,
        redis_url,
        queue_url,
        smtp_sink,
        admin_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
    )
    with database.engine.begin() as connection:
        connection.execute(text("TRUNCATE inbound_mail, soft_bounces"))
    # GIVEN one applied bounce and one that names no message
    stack.send("ada@example.com")
    stack.bounce("flufl-dsn_10.eml", stack.sink.received[0].envelope_from)
    stack.bounce("flufl-postfix_01.eml", "someone@bounces.example.com")
    admin = create_api(admin_routes(lambda: stack.services), max_request_bytes=lambda: 262144)

    def get(path: str, query: dict[str, str] | None = None, auth: bool = True) -> Any:
        event = load_event("status/health")
        event["path"] = event["resource"] = path
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in (query or {}).items()}
        if auth:
            with_headers(event, Authorization=f"Bearer {token}")
        return admin.resolve(event, FakeLambdaContext())

    # WHEN an operator lists the unmatched ones
    answer = get("/admin/inbound", {"outcome": "unmatched"})
    # THEN exactly that one, with what the parser read
    assert answer["statusCode"] == 200, answer["body"]
    (record,) = json.loads(answer["body"])["inbound"]
    assert record["outcome"] == "unmatched"
    assert record["envelope_recipients"] == ["someone@bounces.example.com"]
    assert record["reports"][0]["address"] == "xxxxx@local.ie"
    one = get(f"/admin/inbound/{record['id']}")
    raw = base64.b64decode(json.loads(one["body"])["raw_base64"])
    assert raw == (FIXTURES / "flufl-postfix_01.eml").read_bytes()
    assert len(json.loads(get("/admin/inbound")["body"])["inbound"]) == 2
    assert get("/admin/inbound", auth=False)["statusCode"] == 401
    assert get("/admin/inbound/999999")["statusCode"] == 404


# --- bulk templates (issue 16): a template marked bulk makes its sends bulk ------------


def _templates_with_a_bulk_one(root: Path) -> Path:
    """The shipped templates plus ``newsletter``: welcome's files and a meta.json."""
    for name in ("welcome", "receipt"):
        shutil.copytree(TEMPLATES / name, root / name)
    shutil.copytree(TEMPLATES / "welcome", root / "newsletter")
    (root / "newsletter" / "meta.json").write_text('{"bulk": true}\n')
    return root


@pytest.fixture
def bulk_stack(
    database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> Stack:
    templates = _templates_with_a_bulk_one(tmp_path / "templates")
    return Stack(database, redis_url, queue_url, smtp_sink, templates_dir=templates)


def _one_click_headers(stack: Stack) -> tuple[str | None, str | None]:
    mail = message_from_bytes(stack.sink.received[-1].data)
    return mail["List-Unsubscribe"], mail["List-Unsubscribe-Post"]


def test_a_file_template_marked_bulk_sends_one_click_unsubscribe(bulk_stack: Stack) -> None:
    # GIVEN a file template whose meta.json says bulk, and a send that says nothing of bulk
    message_id = bulk_stack.send("ada@example.com", template="newsletter")
    # THEN the MIME the relay received carries RFC 8058 one-click unsubscribe
    unsubscribe, post = _one_click_headers(bulk_stack)
    assert unsubscribe is not None
    assert "https://mail.example.com/u/" in unsubscribe
    assert "<mailto:u+" in unsubscribe
    assert post == "List-Unsubscribe=One-Click"
    assert "Feedback-ID" in message_from_bytes(bulk_stack.sink.received[-1].data)
    assert ":bulk:" in message_from_bytes(bulk_stack.sink.received[-1].data)["Feedback-ID"]
    assert bulk_stack.status_of(message_id) == "sent"


def test_a_template_not_marked_bulk_sends_no_list_unsubscribe(bulk_stack: Stack) -> None:
    bulk_stack.send("ada@example.com", template="welcome")
    assert _one_click_headers(bulk_stack) == (None, None)


def test_an_uploaded_template_marked_bulk_sends_one_click_unsubscribe(bulk_stack: Stack) -> None:
    # GIVEN the client's own upload marked bulk
    uploaded = upload_template(
        bulk_stack.services.templates,
        bulk_stack.services.renderer,
        name="monthly-offers",
        subject="Offers for {{ name }}",
        html="<p>Hello {{ name }}, this month's offers.</p>",
        owner=bulk_stack.client.client.id,
        bulk=True,
    )
    assert uploaded.bulk
    # WHEN a send names it, without "bulk"
    bulk_stack.send("ada@example.com", template="monthly-offers", props={"name": "Ada"})
    # THEN the relay received one-click unsubscribe headers
    unsubscribe, post = _one_click_headers(bulk_stack)
    assert unsubscribe is not None
    assert "/u/" in unsubscribe
    assert post == "List-Unsubscribe=One-Click"


def test_a_send_cannot_turn_a_bulk_template_into_transactional_mail(bulk_stack: Stack) -> None:
    # WHEN a send names the bulk template with an explicit "bulk": false
    status, body = bulk_stack.post_send(
        {"template": "newsletter", "to": "ada@example.com", "props": SAMPLE, "bulk": False}
    )
    # THEN it is refused, naming the field, and nothing is stored
    assert status == 422, body
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"][0]["field"] == "bulk"
    assert bulk_stack.count(MessageRow) == 0


def test_a_bulk_template_needs_one_recipient(bulk_stack: Stack) -> None:
    status, body = bulk_stack.post_send(
        {"template": "newsletter", "to": ["ada@example.com", "bob@example.com"], "props": SAMPLE}
    )
    assert status == 422, body
    assert body["error"]["code"] == "bulk_single_recipient"
    assert "newsletter" in body["error"]["message"]
    assert bulk_stack.count(MessageRow) == 0
