"""The batch suppression check on PostgreSQL: one statement covers every client of a batch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.domain.feedback import RecipientStatus, Suppression, SuppressionReason
from mailroom.domain.model import Message
from mailroom.services import suppression
from tests.integration.conftest import stored_client

pytestmark = pytest.mark.integration


def _queued(uow: SqlUnitOfWork, client_id: uuid.UUID, to: list[str]) -> Message:
    message = Message(
        id=uuid.uuid4(),
        client_id=client_id,
        trace_id="t",
        template_name="hello",
        from_address="noreply@example.com",
        to=to,
    )
    with uow:
        uow.messages.add(message)
        uow.commit()
    return message


def test_global_own_other_and_expired_entries_on_postgres(database: Database) -> None:
    # GIVEN two clients, a global entry, an entry of A, an expired global one
    uow = SqlUnitOfWork(database)
    a, b = stored_client(database).id, stored_client(database).id
    now = datetime.now(UTC)
    with uow:
        for address, client, expires in (
            ("ada@example.com", None, None),
            ("bob@example.com", a, None),
            ("old@example.com", None, now - timedelta(days=1)),
        ):
            uow.suppressions.upsert(
                Suppression(
                    address=address,
                    reason=SuppressionReason.MANUAL,
                    client_id=client,
                    expires_at=expires,
                )
            )
        uow.commit()
    first = _queued(uow, a, ["ada@example.com"])
    second = _queued(uow, a, ["bob@example.com", "old@example.com"])
    third = _queued(uow, b, ["bob@example.com"])
    # WHEN the repository is asked for both clients and for each alone, and the batch is screened
    with uow:
        found = uow.suppressions.active_for_clients(
            [a, b], ["ada@example.com", "bob@example.com", "old@example.com"], now
        )
        for_a = uow.suppressions.active_for(
            a, ["ada@example.com", "bob@example.com", "old@example.com"], now
        )
        for_b = uow.suppressions.active_for(b, ["bob@example.com", "old@example.com"], now)
    refused = suppression.screen_batch_before_send(uow, [first, second, third], now=now)
    # THEN the one-client query (the send API's) sees the global and its own live entries
    assert sorted(e.address for e in for_a) == ["ada@example.com", "bob@example.com"]
    assert for_b == []
    # AND one query for both clients returned the global and A's live entries, not the expired one
    assert sorted((e.address, e.client_id) for e in found) == [
        ("ada@example.com", None),
        ("bob@example.com", a),
    ]
    # AND the screening applied each to its own client's messages
    assert refused == {first.id}
    assert second.to == ["old@example.com"]
    assert third.to == ["bob@example.com"]
    with uow:
        outcomes = {o.address: o.status for o in uow.recipients.for_message(second.id)}
    assert outcomes == {"bob@example.com": RecipientStatus.SUPPRESSED}
