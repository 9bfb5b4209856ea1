"""The worker's suppression check for a whole batch at once (services/suppression.py)."""

from __future__ import annotations

import uuid

from mailroom.domain.feedback import RecipientStatus, Suppression, SuppressionReason
from mailroom.domain.model import EventType, Message
from mailroom.services import suppression
from tests.fakes import FakeUnitOfWork


def _queued(
    uow: FakeUnitOfWork, client_id: uuid.UUID, to: list[str], cc: list[str] | None = None
) -> Message:
    message = Message(
        id=uuid.uuid4(),
        client_id=client_id,
        trace_id="t",
        template_name="hello",
        from_address="noreply@example.com",
        to=to,
        cc=cc or [],
    )
    with uow:
        uow.messages.add(message)
        uow.commit()
    return message


def _suppress(uow: FakeUnitOfWork, address: str, client_id: uuid.UUID | None) -> None:
    with uow:
        uow.suppressions.upsert(
            Suppression(address=address, reason=SuppressionReason.COMPLAINT, client_id=client_id)
        )
        uow.commit()


def test_a_batch_is_screened_per_message_with_global_and_own_entries() -> None:
    # GIVEN two clients' messages, a global entry, and an entry of client A only
    uow = FakeUnitOfWork()
    a, b = uuid.uuid4(), uuid.uuid4()
    only_global = _queued(uow, a, ["Ada <ada@example.com>"])
    partly = _queued(uow, a, ["bob@example.com", "carol@example.com"], cc=["ada@example.com"])
    other_client = _queued(uow, b, ["bob@example.com"])
    clean = _queued(uow, b, ["dan@example.com"])
    _suppress(uow, "ada@example.com", None)
    _suppress(uow, "bob@example.com", a)
    batch = [only_global, partly, other_client, clean]
    # WHEN the batch is screened
    refused = suppression.screen_batch_before_send(uow, batch)
    # THEN only the message with no To left is refused; A's entry does not touch B
    assert refused == {only_global.id}
    assert partly.to == ["carol@example.com"]
    assert partly.cc == []
    assert other_client.to == ["bob@example.com"]
    assert clean.to == ["dan@example.com"]
    # AND the drops are recorded per recipient and announced once per message
    outcomes = {o.address: o.status for o in uow.recipients.for_message(partly.id)}
    assert outcomes == {
        "bob@example.com": RecipientStatus.SUPPRESSED,
        "ada@example.com": RecipientStatus.SUPPRESSED,
    }
    assert [e.type for e in uow.messages.events(only_global.id)] == [EventType.SUPPRESSED]
    assert [e.type for e in uow.messages.events(partly.id)] == [EventType.RECIPIENTS_SUPPRESSED]
    assert uow.messages.events(other_client.id) == []


def test_it_agrees_with_the_one_message_check_and_repeats_silently() -> None:
    # GIVEN the same message screened alone and in a batch
    uow = FakeUnitOfWork()
    client = uuid.uuid4()
    _suppress(uow, "bob@example.com", client)
    alone = _queued(uow, client, ["ada@example.com", "bob@example.com"])
    batched = _queued(uow, client, ["ada@example.com", "bob@example.com"])
    # WHEN one goes through screen_before_send and the other through the batch check, twice
    assert suppression.screen_before_send(uow, alone) is True
    assert suppression.screen_batch_before_send(uow, [batched]) == set()
    again = _queued(uow, client, ["ada@example.com", "bob@example.com"])
    again.id = batched.id
    suppression.screen_batch_before_send(uow, [again])
    # THEN both keep the same recipients, and a retry announces nothing new
    assert alone.to == batched.to == again.to == ["ada@example.com"]
    drops = [
        e for e in uow.messages.events(batched.id) if e.type is EventType.RECIPIENTS_SUPPRESSED
    ]
    assert len(drops) == 1


def test_an_empty_or_clean_batch_writes_nothing() -> None:
    # GIVEN no suppression entries at all
    uow = FakeUnitOfWork()
    message = _queued(uow, uuid.uuid4(), ["ada@example.com"])
    # WHEN an empty batch and a clean one are screened
    # THEN nothing is refused or recorded
    assert suppression.screen_batch_before_send(uow, []) == set()
    assert suppression.screen_batch_before_send(uow, [message]) == set()
    assert uow.messages.events(message.id) == []
