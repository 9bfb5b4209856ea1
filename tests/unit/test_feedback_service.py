"""Reconciling provider events with messages, on in-memory fakes."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from mailroom.domain.feedback import (
    DeliveryEvent,
    FeedbackEventType,
    RecipientOutcome,
    RecipientStatus,
    RejectReason,
    SuppressionReason,
    bare_address,
    message_uuid_from_header,
    provider_id_candidates,
    status_after,
)
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.services import clients
from mailroom.services.feedback import adopt_orphans, record_delivery_events
from tests.fakes import FakeUnitOfWork, PlainHasher
from tests.fakes_feedback import FakeRecipientRepository

E = FeedbackEventType


def _message(
    uow: FakeUnitOfWork,
    *,
    to: list[str] | None = None,
    status: MessageStatus = MessageStatus.SENT,
    provider: str = "ses",
    provider_msg_id: str | None = "ses-1",
) -> Message:
    client = clients.register_client(uow, PlainHasher(), name=f"c-{uuid.uuid4().hex[:6]}").client
    message = Message(
        id=uuid.uuid4(),
        client_id=client.id,
        trace_id="t",
        template_name="welcome",
        from_address="noreply@example.com",
        to=to or ["Ada <ada@example.com>"],
        status=status,
        provider=provider if status is not MessageStatus.QUEUED else None,
        provider_msg_id=provider_msg_id if status is not MessageStatus.QUEUED else None,
    )
    with uow:
        uow.messages.add(message)
        uow.commit()
    return message


def _event(
    event_type: FeedbackEventType,
    *,
    event_id: str | None = None,
    recipient: str = "ada@example.com",
    reason: RejectReason | None = None,
    message_id: str | None = "ses-1",
    header: str | None = None,
) -> DeliveryEvent:
    return DeliveryEvent(
        provider="ses",
        event_type=event_type,
        event_id=event_id or uuid.uuid4().hex,
        timestamp=datetime(2026, 11, 23, tzinfo=UTC),
        message_id=message_id,
        recipient=recipient,
        reject_reason=reason,
        mta_response="250 OK" if event_type is E.DELIVERED else None,
        message_id_header=header,
    )


def _status(uow: FakeUnitOfWork, message: Message) -> MessageStatus:
    return uow.messages.rows[message.id].status


@pytest.mark.parametrize(
    ("event_type", "reason", "status", "suppression"),
    [
        (E.DELIVERED, None, MessageStatus.DELIVERED, None),
        (E.BOUNCED, RejectReason.BOUNCED, MessageStatus.BOUNCED, SuppressionReason.HARD_BOUNCE),
        (E.BOUNCED, RejectReason.INVALID, MessageStatus.BOUNCED, SuppressionReason.HARD_BOUNCE),
        (E.BOUNCED, RejectReason.OTHER, MessageStatus.BOUNCED, None),  # soft bounce
        (E.BOUNCED, RejectReason.BLOCKED, MessageStatus.BOUNCED, None),
        (E.COMPLAINED, RejectReason.SPAM, MessageStatus.SPAM, SuppressionReason.COMPLAINT),
        (E.REJECTED, RejectReason.BOUNCED, MessageStatus.FAILED, SuppressionReason.HARD_BOUNCE),
        (E.REJECTED, RejectReason.BLOCKED, MessageStatus.FAILED, None),
        (
            E.UNSUBSCRIBED,
            RejectReason.UNSUBSCRIBED,
            MessageStatus.SENT,
            SuppressionReason.UNSUBSCRIBE,
        ),
        (E.DEFERRED, RejectReason.TIMED_OUT, MessageStatus.SENT, None),
        (E.OPENED, None, MessageStatus.SENT, None),
        (E.CLICKED, None, MessageStatus.SENT, None),
        (E.QUEUED, None, MessageStatus.SENT, None),
        (E.UNKNOWN, None, MessageStatus.SENT, None),
    ],
)
def test_each_event_kind_sets_status_and_suppression(
    event_type: FeedbackEventType,
    reason: RejectReason | None,
    status: MessageStatus,
    suppression: SuppressionReason | None,
) -> None:
    # GIVEN a sent message
    uow = FakeUnitOfWork()
    message = _message(uow)
    # WHEN the provider reports an event about it
    summary = record_delivery_events(uow, [_event(event_type, reason=reason)])
    # THEN it is applied, the status ends right, and a suppression exists only where it should
    assert (summary.applied, summary.orphans, summary.duplicates) == (1, 0, 0)
    assert _status(uow, message) is status
    entries = uow.suppressions.entries
    assert [e.reason for e in entries] == ([suppression] if suppression else [])
    if suppression is SuppressionReason.HARD_BOUNCE:
        assert entries[0].client_id is None  # a dead mailbox is dead for every client
    elif suppression is not None:
        assert entries[0].client_id == message.client_id
    # AND the history shows the event
    assert uow.messages.events(message.id)[-1].detail["provider_event"] == event_type.value


def test_a_delivery_after_a_bounce_does_not_resurrect_the_message() -> None:
    uow = FakeUnitOfWork()
    message = _message(uow)
    record_delivery_events(uow, [_event(E.BOUNCED, reason=RejectReason.BOUNCED)])
    record_delivery_events(uow, [_event(E.DELIVERED)])
    assert _status(uow, message) is MessageStatus.BOUNCED
    # ... and the recipient's own outcome stays bounced too
    (outcome,) = uow.recipients.for_message(message.id)
    assert outcome.status is RecipientStatus.BOUNCED
    # while the history still records both, in arrival order
    types = [e.type for e in uow.messages.events(message.id)]
    assert types == [EventType.BOUNCED, EventType.DELIVERED]


def test_a_complaint_after_a_delivery_wins() -> None:
    uow = FakeUnitOfWork()
    message = _message(uow)
    record_delivery_events(
        uow, [_event(E.DELIVERED), _event(E.COMPLAINED, reason=RejectReason.SPAM)]
    )
    assert _status(uow, message) is MessageStatus.SPAM


@pytest.mark.parametrize("current", list(MessageStatus))
def test_status_never_moves_down(current: MessageStatus) -> None:
    for event_type in FeedbackEventType:
        target = status_after(current, event_type)
        if target is not None:
            assert target is not current
            assert status_after(target, event_type) is None


def test_a_duplicate_event_is_applied_once() -> None:
    # GIVEN a bounce already applied
    uow = FakeUnitOfWork()
    message = _message(uow)
    bounce = _event(E.BOUNCED, event_id="sns-1", reason=RejectReason.BOUNCED)
    record_delivery_events(uow, [bounce])
    # WHEN the provider sends it again (a retry), twice within one batch too
    summary = record_delivery_events(uow, [bounce, dataclasses.replace(bounce)])
    # THEN nothing more happens
    assert (summary.received, summary.applied, summary.duplicates) == (2, 0, 2)
    assert len(uow.messages.events(message.id)) == 1
    assert len(uow.feedback.stored) == 1


def test_one_event_id_naming_several_recipients_is_one_event_each() -> None:
    uow = FakeUnitOfWork()
    message = _message(uow, to=["jane@example.com", "mary@example.com", "richard@example.com"])
    summary = record_delivery_events(
        uow,
        [
            _event(E.BOUNCED, event_id="sns-9", recipient=a, reason=RejectReason.BOUNCED)
            for a in ("jane@example.com", "richard@example.com")
        ],
    )
    assert summary.applied == 2
    outcomes = {o.address: o.status for o in uow.recipients.for_message(message.id)}
    assert outcomes == {
        "jane@example.com": RecipientStatus.BOUNCED,
        "richard@example.com": RecipientStatus.BOUNCED,
    }


def test_an_event_for_an_unknown_message_is_kept_as_an_orphan() -> None:
    uow = FakeUnitOfWork()
    summary = record_delivery_events(uow, [_event(E.DELIVERED, message_id="nobody-sent-this")])
    assert (summary.applied, summary.orphans) == (0, 1)
    assert uow.feedback.count_orphans() == 1


def test_an_orphan_is_adopted_when_the_next_event_finds_its_message() -> None:
    # GIVEN a delivery that arrived while the message still read queued
    uow = FakeUnitOfWork()
    message = _message(uow, status=MessageStatus.QUEUED)
    first = record_delivery_events(uow, [_event(E.DELIVERED)])
    assert first.orphans == 1
    # WHEN the worker has recorded the send and the next event arrives
    with uow:
        row = uow.messages.get(message.id)
        assert row is not None
        row.status, row.provider, row.provider_msg_id = MessageStatus.SENT, "ses", "ses-1"
        uow.messages.save_outcome(row)
        uow.commit()
    second = record_delivery_events(uow, [_event(E.OPENED)])
    # THEN the orphan is applied first
    assert (second.applied, second.adopted) == (1, 1)
    assert _status(uow, message) is MessageStatus.DELIVERED
    assert uow.feedback.count_orphans() == 0


def test_adopt_orphans_applies_them_for_a_settled_message() -> None:
    uow = FakeUnitOfWork()
    message = _message(uow, status=MessageStatus.QUEUED)
    record_delivery_events(uow, [_event(E.BOUNCED, reason=RejectReason.BOUNCED)])
    with uow:
        row = uow.messages.get(message.id)
        assert row is not None
        row.status, row.provider, row.provider_msg_id = MessageStatus.SENT, "ses", "<ses-1>"
        uow.messages.save_outcome(row)
        uow.commit()
    assert adopt_orphans(uow, message.id) == 1
    assert _status(uow, message) is MessageStatus.BOUNCED


def test_the_message_id_header_finds_a_message_sent_through_another_provider() -> None:
    # GIVEN a message sent over SMTP (an SES SMTP relay): its provider id is our Message-ID
    uow = FakeUnitOfWork()
    message = _message(uow, provider="smtp", provider_msg_id=None)
    # WHEN SES reports it under its own id, with our Message-ID header
    event = _event(E.DELIVERED, message_id="ses-own-id", header=f"<{message.id}@example.com>")
    summary = record_delivery_events(uow, [event])
    # THEN it is matched by the header
    assert summary.applied == 1
    assert _status(uow, message) is MessageStatus.DELIVERED


def test_events_about_another_recipient_of_the_message_are_kept_apart() -> None:
    uow = FakeUnitOfWork()
    message = _message(uow, to=["ada@example.com", "bob@example.com"])
    record_delivery_events(
        uow,
        [
            _event(E.DELIVERED, recipient="ada@example.com"),
            _event(E.BOUNCED, recipient="Bob <BOB@example.com>", reason=RejectReason.BOUNCED),
        ],
    )
    outcomes = {o.address: o.status for o in uow.recipients.for_message(message.id)}
    assert outcomes == {
        "ada@example.com": RecipientStatus.DELIVERED,
        "bob@example.com": RecipientStatus.BOUNCED,
    }
    # the message-level status is the most severe news
    assert _status(uow, message) is MessageStatus.BOUNCED
    assert [s.address for s in uow.suppressions.entries] == ["bob@example.com"]


def test_a_failure_midway_applies_nothing_of_the_batch() -> None:
    # GIVEN a database that fails while the second event of a batch is applied
    uow = FakeUnitOfWork()
    message = _message(uow)

    class Boom(Exception):
        pass

    class FailingRecipients(FakeRecipientRepository):
        def record(self, message_id: uuid.UUID, outcome: RecipientOutcome) -> bool:
            raise Boom

    uow.recipients = FailingRecipients(uow.feedback_state)
    # WHEN the batch is recorded
    with pytest.raises(Boom):
        record_delivery_events(uow, [_event(E.OPENED), _event(E.DELIVERED)])
    # THEN nothing of it was kept: the provider's retry starts from scratch
    assert _status(uow, message) is MessageStatus.SENT
    assert uow.feedback.stored == []
    assert uow.messages.events(message.id) == []


@pytest.mark.parametrize(
    ("raw", "bare"),
    [
        ("Ada <Ada@Example.COM>", "ada@example.com"),
        ("ada@example.com", "ada@example.com"),
        (" Bob@Example.com ", "bob@example.com"),
        # One form for an internationalised domain, the one email-validator stores
        ("ada@xn--bcher-kva.example", "ada@bücher.example"),
        ("Ada <ADA@BÜCHER.Example>", "ada@bücher.example"),
        ("zoë@XN--BCHER-KVA.example", "zoë@bücher.example"),
        # Not a valid IDN (providers report anything): kept as written
        ("ada@xn--.example", "ada@xn--.example"),
    ],
)
def test_addresses_are_compared_bare_and_lowercased(raw: str, bare: str) -> None:
    assert bare_address(raw) == bare


def test_our_message_id_header_names_the_message() -> None:
    message_id = uuid.uuid4()
    assert message_uuid_from_header(f"<{message_id}@example.com>") == message_id
    assert message_uuid_from_header("<custom-message-ID>") is None
    assert message_uuid_from_header(None) is None


def test_provider_ids_are_tried_with_and_without_brackets() -> None:
    assert provider_id_candidates("<a@b>") == ["<a@b>", "a@b"]
    assert provider_id_candidates("a@b") == ["a@b", "<a@b>"]
