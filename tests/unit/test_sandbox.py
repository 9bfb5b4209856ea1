"""Test mode's simulated recipients and addresses (domain/sandbox.py, domain/addresses.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from mailroom.domain.addresses import Mailbox
from mailroom.domain.errors import InvalidRequest
from mailroom.domain.feedback import FeedbackEventType, RejectReason, suppression_for
from mailroom.domain.model import Client, Message
from mailroom.domain.sandbox import (
    Simulation,
    is_sandbox_address,
    simulated_feedback,
    simulated_suppressions,
    simulation_for,
)
from mailroom.domain.tenancy import KeyKind
from mailroom.services.admission import caller_mode

SIM = "sim.mailroom.invalid"


@pytest.mark.parametrize(
    ("address", "simulation"),
    [
        (f"delivered@{SIM}", Simulation.DELIVERED),
        (f"Bounced+Run-7@{SIM.upper()}", Simulation.BOUNCED),
        (f"Ops <complained+x@{SIM}>", Simulation.COMPLAINED),
        (f"suppressed@{SIM}", Simulation.SUPPRESSED),
        (f"delayed+1+2@{SIM}", Simulation.DELAYED),
        (f"someone@{SIM}", Simulation.DELIVERED),
        ("bounced@example.com", Simulation.DELIVERED),
        (f"bounced@not-{SIM}", Simulation.DELIVERED),
    ],
)
def test_the_local_part_at_the_sandbox_domain_picks_the_outcome(
    address: str, simulation: Simulation
) -> None:
    assert simulation_for(address) is simulation


def test_only_the_sandbox_domain_is_a_sandbox_address() -> None:
    assert is_sandbox_address(f"A <a@{SIM}>")
    assert not is_sandbox_address(f"a@x{SIM}")
    assert not is_sandbox_address(f"a@{SIM}.example.com")


def test_the_sandbox_domain_passes_validation_and_other_invalid_domains_do_not() -> None:
    assert Mailbox.parse("to", "Ada <Ada+x@SIM.Mailroom.Invalid>").address == f"Ada+x@{SIM}"
    with pytest.raises(InvalidRequest, match="special-use"):
        Mailbox.parse("to", "ada@elsewhere.invalid")
    # The local part is checked as any other
    with pytest.raises(InvalidRequest):
        Mailbox.parse("to", f"a..b@{SIM}")


def test_each_outcome_is_reported_as_normalised_feedback_events() -> None:
    at = datetime.now(UTC)
    events = simulated_feedback(
        provider_msg_id="sandbox-1",
        message_id_header="<m@example.com>",
        recipients=[f"bounced@{SIM}", f"delayed@{SIM}", f"complained@{SIM}", "a@example.com"],
        at=at,
    )
    assert [(e.recipient, e.event_type, e.reject_reason) for e in events] == [
        (f"bounced@{SIM}", FeedbackEventType.BOUNCED, RejectReason.BOUNCED),
        (f"delayed@{SIM}", FeedbackEventType.DEFERRED, RejectReason.TIMED_OUT),
        (f"delayed@{SIM}", FeedbackEventType.DELIVERED, None),
        (f"complained@{SIM}", FeedbackEventType.DELIVERED, None),
        (f"complained@{SIM}", FeedbackEventType.COMPLAINED, None),
        ("a@example.com", FeedbackEventType.DELIVERED, None),
    ]
    assert {e.provider for e in events} == {"sandbox"}
    # each event is unique for the feedback path's deduplication key
    assert len({(e.event_id, e.recipient) for e in events}) == len(events)
    # and the bounce and the complaint create suppressions as a provider's would
    client_id = uuid.uuid4()
    assert suppression_for(events[0], client_id) is not None
    assert suppression_for(events[4], client_id) is not None


def test_suppressed_recipients_are_screened_by_simulated_entries_of_the_client() -> None:
    client_id = uuid.uuid4()
    (entry,) = simulated_suppressions(
        [f"delivered@{SIM}", f"S <suppressed+a@{SIM}>", f"suppressed+a@{SIM}"], client_id
    )
    assert (entry.address, entry.client_id, entry.is_test) == (
        f"suppressed+a@{SIM}",
        client_id,
        True,
    )


def test_a_test_entry_screens_its_clients_test_mail_only() -> None:
    client_id = uuid.uuid4()
    (entry,) = simulated_suppressions([f"suppressed@{SIM}"], client_id)
    live = Message(
        id=uuid.uuid4(),
        client_id=client_id,
        trace_id="t",
        template_name="w",
        from_address="f@example.com",
        to=[],
    )
    test = Message(
        id=uuid.uuid4(),
        client_id=client_id,
        trace_id="t",
        template_name="w",
        from_address="f@example.com",
        to=[],
        is_test=True,
    )
    other = Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name="w",
        from_address="f@example.com",
        to=[],
        is_test=True,
    )
    assert (entry.applies_to(live), entry.applies_to(test), entry.applies_to(other)) == (
        False,
        True,
        False,
    )


def test_a_sandbox_client_makes_every_key_a_test_key() -> None:
    client = Client(uuid.uuid4(), "c", "mr_live_x", rate_limit=1, quota_limit=1)
    assert caller_mode(client, KeyKind.LIVE) is KeyKind.LIVE
    assert caller_mode(client, KeyKind.TEST) is KeyKind.TEST
    client.sandbox_mode = True
    assert caller_mode(client, KeyKind.LIVE) is KeyKind.TEST
