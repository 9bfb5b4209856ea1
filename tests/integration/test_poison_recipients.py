"""One client's bad recipients never trip the breaker every client shares (issue 14).

The whole worker path on real parts: PostgreSQL, Redis (the breaker's state,
shared as in production), SQS on moto, and an aiosmtpd relay on a socket that
offers no SMTPUTF8, refuses ``reject-*`` recipients with 550 and greylists
``defer-*`` ones with 451. Client A's 20 poison messages are queued ahead
of client B's 20 good ones and the worker takes them in that order, ten a
batch: before the fix, the first five UTF-8 local parts alone (smtplib's
UnicodeEncodeError, counted as transient) opened the breaker and B's mail
was held back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.providers.smtp import SmtpProvider
from mailroom.adapters.queue import SqsMessageQueue
from mailroom.domain.commands import SendRequest
from mailroom.domain.model import Client, EventType, Message, MessageStatus
from mailroom.services.clients import register_client
from tests.fakes import PlainHasher
from tests.integration.conftest import SmtpSink, running_sink
from tests.integration.test_failover import SAMPLE_PROPS, Stack, database_url_of, receive_all

pytestmark = pytest.mark.integration

POISON = (
    # A non-ASCII local part, to a relay without SMTPUTF8: permanent.
    [f"zoë{i}@bücher.example" for i in range(8)]
    # Refused at RCPT with 550: permanent.
    + [f"reject-{i}@example.com" for i in range(6)]
    # Greylisted at RCPT with 451: deferred (tried again later).
    + [f"defer-{i}@example.com" for i in range(6)]
)
GOOD = [f"reader{i}@example.com" for i in range(20)]


@pytest.fixture
def relay() -> Iterator[SmtpSink]:
    with running_sink(pipelining=True, smtputf8=False) as sink:
        yield sink


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, relay: SmtpSink) -> Stack:
    return Stack(
        database_url_of(database),
        redis_url,
        queue_url,
        {"smtp": SmtpProvider(relay.host, relay.port, timeout_seconds=2)},
    )


def queue_as_the_api_does(stack: Stack, client: Client, to: str) -> uuid.UUID:
    """A queued row whose address is what the send API validated and stored."""
    request = SendRequest.model_validate({"template": "welcome", "to": to})
    message = Message(
        id=uuid.uuid4(),
        client_id=client.id,
        trace_id=uuid.uuid4().hex,
        template_name="welcome",
        from_address=stack.settings.default_from,
        to=list(request.to),
        props=SAMPLE_PROPS,
    )
    with stack.services.uow() as uow:
        uow.messages.add(message)
        uow.messages.append_event(message.id, EventType.ACCEPTED, {})
        uow.commit()
    SqsMessageQueue(stack.queue_url, "us-east-1").enqueue(message.id, message.trace_id)
    return message.id


def test_twenty_poison_messages_from_one_client_leave_anothers_mail_and_the_breaker_alone(
    stack: Stack, relay: SmtpSink, redis_url: str
) -> None:
    # GIVEN client A's 20 poison messages queued ahead of client B's 20 good ones
    client_a = stack.client
    client_b = register_client(stack.services.uow(), PlainHasher(), name="b").client
    poison = [queue_as_the_api_does(stack, client_a, to) for to in POISON]
    good = [queue_as_the_api_does(stack, client_b, to) for to in GOOD]
    order = {str(message_id): index for index, message_id in enumerate(poison + good)}

    # WHEN the worker takes them, in that order, ten records a batch
    received = receive_all(stack.sqs, stack.queue_url)
    assert len(received) == 40
    received.sort(key=lambda record: order[_message_id(record)])
    for start in range(0, len(received), 10):
        stack.invoke(received[start : start + 10])

    # THEN every one of B's messages was sent, through the SMTP relay
    assert [stack.message(i).status for i in good] == [MessageStatus.SENT] * 20
    assert sorted(r for mail in relay.received for r in mail.recipients) == sorted(GOOD)
    # AND the breaker that every worker shares through Redis never moved,
    # nor counted a single failure toward opening
    assert stack.breakers.state("smtp") == "closed"
    assert stack.signals.breaker_states("smtp") == []  # type: ignore[attr-defined]
    counter = redis.Redis.from_url(redis_url).get("mailroom:breaker:smtp:fail_counter")
    assert int(counter or 0) == 0
    # AND A's messages failed (or wait) for their own reasons, with them recorded
    outcomes = [stack.message(i) for i in poison]
    for message in outcomes[:8]:
        assert message.status is MessageStatus.FAILED
        assert message.last_error is not None
        assert message.last_error.startswith("permanent: smtp: ")
        assert "SMTPUTF8" in message.last_error
    for message in outcomes[8:14]:
        assert message.status is MessageStatus.FAILED
        assert message.last_error is not None
        assert message.last_error.startswith("permanent: smtp: recipients refused")
    for message in outcomes[14:]:
        # Greylisted: queued again with a backoff, for the same relay later.
        assert message.status is MessageStatus.QUEUED
        assert message.last_error is not None
        assert message.last_error.startswith("deferred: smtp: recipients refused")


def _message_id(record: dict[str, object]) -> str:
    body = record["Body"]
    assert isinstance(body, str)
    return str(json.loads(body)["message_id"])
