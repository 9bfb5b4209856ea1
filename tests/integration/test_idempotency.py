"""Idempotency-Key on POST /v1/send, on real PostgreSQL, Redis and SQS (moto)."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.templates import FileTemplateStore, TemplateSource, TemplateStore
from mailroom.bootstrap import bootstrap
from mailroom.entrypoints.api import create_api, send_routes
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.integration.conftest import SmtpSink
from tests.integration.test_pipeline import TEMPLATES, Stack, database_url_of

pytestmark = pytest.mark.integration

# The welcome template's sample request, as a dict.
WELCOME: dict[str, Any] = json.loads(load_event("send/send-welcome")["body"])


class GatedTemplates(TemplateStore):
    """The shipped templates; a read waits at the gate while it is shut."""

    def __init__(self) -> None:
        self.files = FileTemplateStore(TEMPLATES)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def get(
        self, name: str, version: int | None = None, *, client_id: uuid.UUID | None = None
    ) -> TemplateSource:
        self.entered.set()
        assert self.gate.wait(timeout=30)
        return self.files.get(name, version)


# Powertools keeps the current event in a class attribute, so requests resolved
# at once in one process must be identical (they are below): the concurrency
# under test is PostgreSQL's, not the resolver's.


class KeyedStack(Stack):
    def __init__(self, *args: Any, templates: TemplateStore | None = None) -> None:
        super().__init__(*args)
        if templates is not None:
            self.services = bootstrap(self.settings, templates=templates)
        self.api = create_api(
            [send_routes(lambda: self.services)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
        )

    def send_keyed(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        event = load_event("send/send-welcome")
        with_headers(
            event,
            X_Api_Key=self.client.api_key,
            X_Api_Secret=self.client.api_secret,
            Idempotency_Key=key,
        )
        with_body(event, body)
        response = self.api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def queued(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])


def _rows(database: Database) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM messages")).scalar_one())


@pytest.fixture
def keyed(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> KeyedStack:
    return KeyedStack(database_url_of(database), redis_url, queue_url, smtp_sink.port)


def test_the_same_key_and_body_answer_the_original_response(
    keyed: KeyedStack, database: Database
) -> None:
    # GIVEN a send accepted under a key
    first = keyed.send_keyed("order-1042", WELCOME)
    # WHEN the client retries with the same key and the same body (keys reordered)
    again = keyed.send_keyed("order-1042", dict(reversed(list(WELCOME.items()))))
    # THEN the answer is the original one: same id, no new row, no new queue message
    assert first[0] == again[0] == 202
    assert again[1] == first[1]
    assert _rows(database) == 1
    assert keyed.queued() == 1


def test_the_same_key_with_another_body_is_refused(keyed: KeyedStack, database: Database) -> None:
    # GIVEN a send accepted under a key
    assert keyed.send_keyed("order-1042", WELCOME)[0] == 202
    # WHEN the key comes back with a different body
    status, body = keyed.send_keyed("order-1042", {**WELCOME, "to": "bob@example.com"})
    # THEN 422 idempotency_key_reused, and nothing new was stored or queued
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reused")
    assert _rows(database) == 1
    assert keyed.queued() == 1


def test_a_concurrent_duplicate_in_flight_gets_409(
    database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN a first request held up mid-flight (after it took the key)
    templates = GatedTemplates()
    templates.gate.clear()
    stack = KeyedStack(
        database_url_of(database), redis_url, queue_url, smtp_sink.port, templates=templates
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(stack.send_keyed, "order-1042", WELCOME)
        assert templates.entered.wait(timeout=30)
        # WHEN a second request with the same key arrives meanwhile
        second = stack.send_keyed("order-1042", WELCOME)
        templates.gate.set()
        first_status, first_body = first.result(timeout=30)
    # THEN the second gets 409 idempotency_in_progress, the first is accepted
    assert (second[0], second[1]["error"]["code"]) == (409, "idempotency_in_progress")
    assert first_status == 202
    # ...and a retry after it finished gets the first request's answer
    assert stack.send_keyed("order-1042", WELCOME) == (202, first_body)
    assert _rows(database) == 1
    assert stack.queued() == 1


def test_racing_requests_with_one_key_store_one_message(
    keyed: KeyedStack, database: Database
) -> None:
    # GIVEN eight copies of one request under one key, released at once
    start = threading.Barrier(8)

    def send(_: int) -> tuple[int, dict[str, Any]]:
        start.wait()
        return keyed.send_keyed("order-1042", WELCOME)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(8)))
    # THEN each is either the accepted answer or 409, and one message exists
    accepted = {json.dumps(body, sort_keys=True) for status, body in answers if status == 202}
    assert len(accepted) == 1
    assert {status for status, _ in answers} <= {202, 409}
    assert _rows(database) == 1
    assert keyed.queued() == 1
