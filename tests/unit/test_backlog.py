"""The backlog detail of GET /health and GET /admin/health: DLQ depth, oldest unsent age."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailroom.bootstrap import bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api
from mailroom.services import backlog
from tests.events import FakeLambdaContext, load_event
from tests.fakes import FakeUnitOfWork, PlainHasher, RecordingQueue
from tests.provider_fakes import FakeDeadLetterQueue
from tests.unit.test_delivery_retries import _accept


def test_the_backlog_reports_dlq_depth_and_the_oldest_unsent_age() -> None:
    # GIVEN two letters on the DLQ and a message accepted ten minutes ago
    uow = FakeUnitOfWork()
    message_id = _accept(uow)
    uow.messages.rows[message_id].created_at = datetime.now(UTC) - timedelta(minutes=10)
    dlq = FakeDeadLetterQueue()
    dlq.add(uuid.uuid4(), None, "retries exhausted")
    dlq.add(uuid.uuid4(), None, "retries exhausted")
    # WHEN the backlog is measured
    measured = backlog.measure(uow, dlq, now=datetime.now(UTC))
    # THEN both figures are there
    assert measured.dead_letter_depth == 2
    assert measured.oldest_queued_age_seconds is not None
    assert 599 <= measured.oldest_queued_age_seconds <= 660


def test_admin_health_reports_the_backlog_as_health_does() -> None:
    # GIVEN one letter on the DLQ and a message accepted five minutes ago
    uow = FakeUnitOfWork()
    message_id = _accept(uow)
    uow.messages.rows[message_id].created_at = datetime.now(UTC) - timedelta(minutes=5)
    dlq = FakeDeadLetterQueue()
    dlq.add(uuid.uuid4(), None, "retries exhausted")
    services = bootstrap(
        Settings(templates_dir=Path("templates")),
        uow=lambda: uow,
        hasher=PlainHasher(),
        queue=RecordingQueue(),
        dead_letters=dlq,
        health_probes={},
    )
    app = create_api(admin_routes(lambda: services), max_request_bytes=lambda: 1024)
    event = load_event("status/health")
    event["path"] = event["resource"] = "/admin/health"
    # WHEN an operator asks the admin function for its health
    response = app.resolve(event, FakeLambdaContext())
    # THEN the answer carries the same backlog figures as GET /health
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["backlog"]["dead_letter_depth"] == 1
    assert 299 <= body["backlog"]["oldest_queued_age_seconds"] <= 360
