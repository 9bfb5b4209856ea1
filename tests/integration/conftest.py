"""Real backing services for integration tests.

PostgreSQL and Redis are the machine's own servers (127.0.0.1); SQS comes from
moto's server on a free loopback port; SMTP is an aiosmtpd server on a socket.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from moto.server import ThreadedMotoServer
from sqlalchemy import create_engine, text

from devstack.smtp_sink import ehlo_answer
from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.domain.model import Client
from tests.run_services import (
    POSTGRES_SERVER,
    drop_database_at_exit,
    own_redis_server,
    run_database_name,
)

# Told: use (and empty) these. Not told: this run's own (tests/run_services.py).
TOLD_DATABASE_URL = os.environ.get("MAILROOM_TEST_DATABASE_URL")
TOLD_REDIS_URL = os.environ.get("MAILROOM_TEST_REDIS_URL")
TEST_DATABASE_URL = TOLD_DATABASE_URL or f"{POSTGRES_SERVER}/{run_database_name('test')}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def integration_redis_url() -> str:
    """The Redis database integration tests use; this run's own server unless told."""
    return TOLD_REDIS_URL or f"{own_redis_server()}/0"


def empty_database(url: str) -> None:
    """Create the database if missing and drop everything in it."""
    ensure_database_exists(url)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url() -> str:
    """A database migrated from nothing, once per run: the migrations are under test too."""
    if TOLD_DATABASE_URL is None:
        drop_database_at_exit(TEST_DATABASE_URL)
    empty_database(TEST_DATABASE_URL)
    upgrade_to_head(TEST_DATABASE_URL)
    return TEST_DATABASE_URL


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url, pool_size=2)
    with db.engine.begin() as connection:
        # TRUNCATE fires no row trigger, so the append-only logs can be emptied here;
        # CASCADE empties the tables that refer to these too; message_recipients
        # is named because it has no foreign key to messages (migration w17p01).
        connection.execute(
            text(
                "TRUNCATE message_events, messages, message_recipients, clients, "
                "admin_audit_log CASCADE"
            )
        )
    yield db
    db.dispose()


@pytest.fixture
def redis_url() -> str:
    url = integration_redis_url()
    redis.Redis.from_url(url).flushdb()
    return url


# `MAILROOM_TEST_AWS=localstack`: the AWS side is LocalStack (MAILROOM_LOCALSTACK_URL,
# default http://127.0.0.1:4566, started on this host from .venv-localstack if
# none answers) instead of moto; `make integration-localstack` runs the SQS/SNS part.
TEST_AWS = os.environ.get("MAILROOM_TEST_AWS", "moto")


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The AWS endpoint of this run: moto's server, or LocalStack when asked for."""
    if TEST_AWS == "localstack":
        from devstack import localstack

        endpoint = os.environ.get("MAILROOM_LOCALSTACK_URL", localstack.DEFAULT_ENDPOINT)
        if localstack.answers(endpoint):
            yield endpoint
            return
        log = tmp_path_factory.mktemp("localstack") / "localstack.log"
        process = localstack.start_on_host(endpoint, log)
        try:
            yield endpoint
        finally:
            localstack.stop(process)
        return
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points every boto3 client at moto, the way AWS_ENDPOINT_URL does in production."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_endpoint


@pytest.fixture
def queue_url(aws: str) -> str:
    sqs = boto3.client("sqs", region_name="us-east-1")
    name = f"mailroom-test-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return str(
        sqs.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": "30",
                "RedrivePolicy": f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "8"}}',
            },
        )["QueueUrl"]
    )


@dataclass
class ReceivedMail:
    envelope_from: str
    recipients: list[str]
    data: bytes
    session_id: int
    mail_options: list[str] = field(default_factory=list)


@dataclass
class SinkHandler:
    """Accepts mail, except for recipients whose local part asks for a failure."""

    received: list[ReceivedMail] = field(default_factory=list)
    # Relays in service (Postfix, SES, SendGrid) offer PIPELINING, so the
    # sink does too unless a test asks for one that does not.
    pipelining: bool = True

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        return ehlo_answer(session, hostname, responses, pipelining=self.pipelining)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.startswith("reject-"):
            return "550 5.1.1 no such user"
        if address.startswith("defer-"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.received.append(
            ReceivedMail(
                envelope_from=str(envelope.mail_from),
                recipients=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                session_id=id(session),
                mail_options=list(envelope.mail_options),
            )
        )
        return "250 Message accepted"


@dataclass
class SmtpSink:
    host: str
    port: int
    handler: SinkHandler

    @property
    def received(self) -> list[ReceivedMail]:
        return self.handler.received


@contextlib.contextmanager
def running_sink(*, pipelining: bool = True, smtputf8: bool = False) -> Iterator[SmtpSink]:
    handler = SinkHandler(pipelining=pipelining)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield SmtpSink("127.0.0.1", port, handler)
    finally:
        controller.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with running_sink() as sink:
        yield sink


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Lambda's SQS event for messages as boto3's receive_message returns them."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
    }


def stored_client(database: Database) -> Client:
    """A client row, committed, for tests that need messages to belong to someone."""
    client = Client(
        id=uuid.uuid4(),
        name=f"c-{uuid.uuid4().hex[:8]}",  # names are unique; tests store several
        api_key_prefix=f"mr_live_{uuid.uuid4().hex[:24]}",
        rate_limit=60,
        quota_limit=100,
    )
    with SqlUnitOfWork(database) as uow:
        uow.clients.add(client)
        uow.commit()
    return client
