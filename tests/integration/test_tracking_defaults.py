"""Issue 21: tracking defaults on a queue and a template, under a send's own choice."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from mailroom.adapters.db.unit_of_work import Database
from mailroom.services import templates as template_service
from tests.integration.conftest import SmtpSink
from tests.integration.test_pipeline import database_url_of
from tests.integration.test_queues import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(database: Database, redis_url: str, aws: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(database_url_of(database), redis_url, smtp_sink.port)


def tracking_of(stack: Stack, answer: dict[str, Any]) -> dict[str, bool] | None:
    with stack.services.uow() as uow:
        message = uow.messages.get(uuid.UUID(answer["id"]))
    assert message is not None
    tracking = message.options.tracking
    return None if tracking is None else dict(tracking)


def test_queue_then_template_then_send_each_key_overriding_both_ways(stack: Stack) -> None:
    # GIVEN a queue that tracks opens and clicks, and the client's upload
    # of a template that turns clicks off
    queue = stack.create("newsletter", tracking={"opens": True, "clicks": True})
    assert queue["tracking"] == {"clicks": True, "opens": True}
    template_service.upload_template(
        stack.services.templates,
        stack.services.renderer,
        name="digest",
        subject="Digest",
        html='<p>Hi <a href="https://example.com/a">a</a></p>',
        owner=stack.client.client.id,
        tracking=(("clicks", False),),
    )

    def send(**fields: Any) -> dict[str, bool] | None:
        status, answer = stack.send(**fields)
        assert status == 202, answer
        return tracking_of(stack, answer)

    # WHEN mail goes through the queue with the shipped template, then with
    # the upload, then with the upload and a send that wants clicks back
    # THEN the queue's default, then the template's over it, then the send's over both
    assert send(queue="newsletter") == {"opens": True, "clicks": True}
    digest = {"template": "digest", "props": {}}
    assert send(queue="newsletter", **digest) == {"opens": True, "clicks": False}
    assert send(queue="newsletter", tracking={"clicks": True}, **digest) == {
        "opens": True,
        "clicks": True,
    }
    # AND a send may turn the queue's default off too
    assert send(queue="newsletter", tracking={"opens": False}) == {"opens": False, "clicks": True}
    # AND the default queue, with no default, leaves the template's alone
    assert send(**digest) == {"clicks": False}
    # AND a queue's default can be changed and removed
    status, changed = stack.call("PATCH", f"/v1/queues/{queue['id']}", {"tracking": None})
    assert status == 200, changed
    assert changed["tracking"] is None
    assert send(queue="newsletter") is None


def test_a_malformed_tracking_default_is_refused_and_nothing_is_written(stack: Stack) -> None:
    status, refused = stack.call(
        "POST", "/v1/queues", {"name": "bad", "tracking": {"opens": "yes"}}
    )
    assert status == 422, refused
    status, listing = stack.call("GET", "/v1/queues")
    assert status == 200
    assert "bad" not in [queue["name"] for queue in listing["queues"]]
