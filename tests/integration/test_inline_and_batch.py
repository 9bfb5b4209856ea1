"""Issue 17 on the real services: inline content through the worker, batches, retry."""

from __future__ import annotations

import email
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email import policy
from typing import Any

import pytest
from sqlalchemy import func, select

from mailroom.adapters.db.inline_contents import SqlInlineContentStore
from mailroom.adapters.db.tables import InlineContentRow, MessageEventRow, MessageRecipientRow
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.redis_tenancy import RedisQuotaCounter, RedisRateLimiter
from mailroom.adapters.tenancy import Bucket
from mailroom.domain.model import MessageStatus
from mailroom.domain.personalization import InlineContent
from mailroom.domain.tenancy import QuotaPeriod
from tests.events import FakeLambdaContext, request_event, with_headers
from tests.integration.conftest import SmtpSink
from tests.integration.test_pipeline import TEMPLATES, Stack, database_url_of

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(database_url_of(database), redis_url, queue_url, smtp_sink.port)


def _call(stack: Stack, method: str, path: str, body: Any = None, **headers: str) -> Any:
    event = request_event(
        method,
        path,
        body=body,
        X_Api_Key=stack.client.api_key,
        X_Api_Secret=stack.client.api_secret,
        Content_Type="application/json",
    )
    with_headers(event, **headers)
    response = stack.api.resolve(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def _inline(to: str, **props: Any) -> dict[str, Any]:
    return {
        "to": to,
        "subject": "Order for {{ name|'Customer' }}",
        "html": "<p>{{ name|'Customer' }} in {{ user.address.city }}: {{ items.0.sku }}</p>",
        "text": "{{ name|'Customer' }} in {{ user.address.city }}: {{ items.0.sku }}",
        "props": props,
    }


def _drain(stack: Stack) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while True:
        got = stack.sqs.receive_message(
            QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not got:
            return received
        received.extend(got)


def test_inline_content_is_personalised_by_the_worker(stack: Stack, smtp_sink: SmtpSink) -> None:
    # GIVEN inline content with a nested path, an index, a default and markup in a value
    status, accepted = stack.send(
        _inline(
            "ada@example.com",
            user={"address": {"city": "<Oslo & Bergen>"}},
            items=[{"sku": "A-1"}],
        )
    )
    assert status == 202, accepted
    # WHEN the worker sends it
    answer, _ = stack.run_worker_once()
    # THEN the mail is personalised: escaped in HTML, raw in text, default in the subject
    assert answer == {"batchItemFailures": []}
    (mail,) = smtp_sink.received
    parsed = email.message_from_bytes(mail.data, policy=policy.default)
    assert parsed["Subject"] == "Order for Customer"
    html = parsed.get_body(preferencelist=("html",))
    text = parsed.get_body(preferencelist=("plain",))
    assert html is not None
    assert text is not None
    assert "Customer in &lt;Oslo &amp; Bergen&gt;: A-1" in html.get_content()
    assert "Customer in <Oslo & Bergen>: A-1" in text.get_content()
    view = stack.status(accepted["id"])
    assert view["status"] == "sent"
    assert view["template"].startswith("inline:")
    assert view["subject"] == "Order for Customer"


def test_a_lenient_send_renders_missing_props_empty_in_the_mail(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    status, accepted = stack.send({**_inline("ada@example.com", name="Ada"), "strict": False})
    assert status == 202
    assert accepted["render_warnings"] == ["user.address.city", "items.0.sku"]
    stack.run_worker_once()
    (mail,) = smtp_sink.received
    parsed = email.message_from_bytes(mail.data, policy=policy.default)
    text = parsed.get_body(preferencelist=("plain",))
    assert text is not None
    assert text.get_content().strip() == "Ada in :"


def test_a_batch_is_written_at_once_and_queued_in_tens(stack: Stack, database: Database) -> None:
    # GIVEN a permissive batch of 23 items: 21 valid (template and inline), 2 not
    items: list[Any] = [
        _inline(
            f"user{n}@example.com",
            name=f"U{n}",
            user={"address": {"city": "X"}},
            items=[{"sku": n}],
        )
        for n in range(20)
    ]
    items.insert(5, {"template": "welcome", "to": "broken@"})
    items.insert(9, _inline("nobody@example.com"))  # missing props, strict per item
    items.append(
        {
            "template": "welcome",
            "to": "Ada <ada@example.com>",
            "cc": "cy@example.com",
            "props": json.loads((TEMPLATES / "welcome" / "sample.json").read_text()),
        }
    )
    # WHEN it is sent
    status, answer = _call(stack, "POST", "/v1/send/batch", items, X_Batch_Validation="permissive")
    # THEN 21 are accepted, the two bad ones reported by index
    assert status == 200, answer
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [
        (5, "validation_error"),
        (9, "missing_prop"),
    ]
    ids = {entry["id"] for entry in answer["data"]}
    assert len(ids) == 21
    # AND every accepted message is a row with its accepted event and recipients, and
    # on the queue once
    with database.engine.connect() as connection:
        events = connection.execute(select(func.count()).select_from(MessageEventRow)).scalar_one()
        recipients = connection.execute(
            select(func.count()).select_from(MessageRecipientRow)
        ).scalar_one()
    assert (events, recipients) == (21, 22)
    queued = [json.loads(m["Body"])["message_id"] for m in _drain(stack)]
    assert sorted(queued) == sorted(ids)
    with SqlUnitOfWork(database) as uow:
        stored = uow.messages.get(uuid.UUID(answer["data"][-1]["id"]))
    assert stored is not None
    assert (stored.to, stored.cc, stored.status) == (
        ["Ada <ada@example.com>"],
        ["cy@example.com"],
        MessageStatus.QUEUED,
    )


def test_a_strict_batch_with_one_bad_item_writes_nothing(stack: Stack, database: Database) -> None:
    items = [
        _inline("a@example.com", name="A", user={"address": {"city": "X"}}, items=[{"sku": 1}]),
        {},
    ]
    status, answer = _call(stack, "POST", "/v1/send/batch", items)
    assert status == 422
    assert [d["index"] for d in answer["error"]["details"]] == [1]
    with database.engine.connect() as connection:
        assert (
            connection.execute(select(func.count()).select_from(MessageEventRow)).scalar_one() == 0
        )
    assert _drain(stack) == []


def test_a_failed_message_is_retried_once_however_often_it_is_asked(
    stack: Stack, database: Database
) -> None:
    # GIVEN a message that failed
    status, accepted = stack.send()
    assert status == 202
    _drain(stack)
    message_id = uuid.UUID(accepted["id"])
    with SqlUnitOfWork(database) as uow:
        message = uow.messages.get(message_id)
        assert message is not None
        message.status, message.last_error = MessageStatus.FAILED, "permanent: 550 no such user"
        uow.messages.save_outcome(message)
        uow.commit()
    # WHEN it is retried twice
    first = _call(stack, "POST", f"/v1/messages/{message_id}/retry")
    second = _call(stack, "POST", f"/v1/messages/{message_id}/retry")
    # THEN the first requeues it (on the queue once), the second is 409
    assert first[0] == 202, first
    assert second[0] == 409
    assert [json.loads(m["Body"])["message_id"] for m in _drain(stack)] == [str(message_id)]
    view = stack.status(str(message_id))
    assert view["status"] == "queued"
    assert view["last_error"] is None
    assert [e["type"] for e in view["events"]] == ["accepted", "retried"]
    assert view["events"][-1]["detail"]["previous_error"] == "permanent: 550 no such user"


def test_inline_content_is_kept_once_per_hash(database: Database) -> None:
    content = InlineContent(subject="s {{ a }}", html="<p>{{ a }}</p>", text=None)
    SqlInlineContentStore(database).save(content)
    # A second instance (no memory of the first) writes nothing new.
    SqlInlineContentStore(database).save(content)
    source = SqlInlineContentStore(database).get(content.template_name)
    assert source is not None
    assert (source.subject, source.html, source.text, source.inline) == (
        "s {{ a }}",
        "<p>{{ a }}</p>",
        None,
        True,
    )
    assert SqlInlineContentStore(database).get("inline:" + "0" * 64) is None
    with database.engine.connect() as connection:
        kept = connection.execute(
            select(func.count())
            .select_from(InlineContentRow)
            .where(InlineContentRow.content_hash == content.content_hash)
        ).scalar_one()
    assert kept == 1


def test_a_batch_takes_its_quota_and_rate_tokens_in_one_step_each(redis_url: str) -> None:
    # GIVEN a quota counter with 7 of 10 used, and a bucket of 5 tokens
    store = RedisStore(redis_url)
    counter = RedisQuotaCounter(store)
    client_id, period = uuid.uuid4(), QuotaPeriod.containing(datetime.now(UTC))
    assert counter.take_up_to(client_id, period, 10, 5) is None  # unset: seeded by the caller
    counter.seed(client_id, period, 7)
    # WHEN batches of 5 are taken, in parallel
    with ThreadPoolExecutor(max_workers=4) as pool:
        takes = list(pool.map(lambda _: counter.take_up_to(client_id, period, 10, 5), range(4)))
    # THEN exactly the 3 that fit were counted, by whichever came first
    assert sorted(t[0] for t in takes if t is not None) == [0, 0, 0, 3]
    assert counter.read(client_id, period) == 10
    counter.give_back_many(client_id, period, 2)
    counter.give_back_many(client_id, period, 50)  # never below zero
    assert counter.read(client_id, period) == 0
    # AND a bucket gives n tokens at once or none
    limiter = RedisRateLimiter(store)
    bucket = Bucket(f"client:{client_id}", 5)
    assert limiter.take_all([bucket], cost=4).allowed
    assert not limiter.take_all([bucket], cost=2).allowed
    assert limiter.take_all([bucket], cost=1).allowed
