"""GET /health's backlog detail: DLQ depth and the oldest unsent message's age (issue 7)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from mailroom.services import backlog
from tests.fakes import FakeUnitOfWork
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
