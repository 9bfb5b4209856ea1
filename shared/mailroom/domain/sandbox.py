"""Test mode's simulated recipients: what the sandbox provider reports for each address.

A message sent in test mode is never handed to a real provider; the sandbox
provider records it and reports delivery feedback as a real provider's
webhook would, through the same ``DeliveryEvent`` type and the same service
function (services/feedback.py). Addresses at the reserved domain
``sim.mailroom.invalid`` (``.invalid`` can never be a real domain, RFC 2606)
choose the outcome by their local part, with an optional ``+label``
(``bounced+signup-test@sim.mailroom.invalid``) so a test can use a fresh
address each run. Every other address reads as delivered.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum

from mailroom.domain.addresses import SANDBOX_DOMAIN as SANDBOX_DOMAIN
from mailroom.domain.feedback import (
    DeliveryEvent,
    FeedbackEventType,
    RejectReason,
    Suppression,
    SuppressionReason,
    bare_address,
)

SANDBOX_PROVIDER = "sandbox"
_AT_SANDBOX = "@" + SANDBOX_DOMAIN


class Simulation(StrEnum):
    """What the sandbox does with a recipient, named by the address's local part."""

    DELIVERED = "delivered"
    BOUNCED = "bounced"  # a hard bounce (5.1.1): suppresses the address for test mail
    COMPLAINED = "complained"  # delivered, then a spam complaint
    SUPPRESSED = "suppressed"  # on the suppression list already: refused or dropped at send
    DELAYED = "delayed"  # deferred once, then delivered


def is_sandbox_address(value: str) -> bool:
    """True for an address at ``sim.mailroom.invalid`` (``value`` may carry a display name)."""
    return bare_address(value).endswith(_AT_SANDBOX)


def simulation_for(value: str) -> Simulation:
    """The outcome the sandbox gives a recipient; an unknown local part is delivered too."""
    address = bare_address(value)
    if not address.endswith(_AT_SANDBOX):
        return Simulation.DELIVERED
    base = address[: -len(_AT_SANDBOX)].partition("+")[0]
    try:
        return Simulation(base)
    except ValueError:
        return Simulation.DELIVERED


def sandbox_fields(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (field, value) pairs whose value is a sandbox address."""
    return [(name, value) for name, value in fields if is_sandbox_address(value)]


def simulated_suppressions(values: Iterable[str], client_id: uuid.UUID) -> list[Suppression]:
    """The suppressions a test send pretends to find: one per ``suppressed@`` recipient.

    Never stored: they screen this one message the way a real entry would,
    so its refusal (every To suppressed) or its dropped recipients read
    exactly as live mail's do.
    """
    found: dict[str, Suppression] = {}
    for value in values:
        if simulation_for(value) is Simulation.SUPPRESSED:
            address = bare_address(value)
            found[address] = Suppression(
                address=address,
                reason=SuppressionReason.MANUAL,
                client_id=client_id,
                source=SANDBOX_PROVIDER,
                note="simulated by test mode",
                is_test=True,
            )
    return list(found.values())


# (feedback event, reject reason, SMTP response) per outcome, in the order
# the sandbox reports them; a real provider's webhook sends the same.
_REPORTS: dict[
    Simulation, tuple[tuple[FeedbackEventType, RejectReason | None, str | None], ...]
] = {
    Simulation.DELIVERED: ((FeedbackEventType.DELIVERED, None, "250 2.0.0 OK (simulated)"),),
    Simulation.BOUNCED: (
        (
            FeedbackEventType.BOUNCED,
            RejectReason.BOUNCED,
            "550 5.1.1 mailbox does not exist (simulated)",
        ),
    ),
    Simulation.COMPLAINED: (
        (FeedbackEventType.DELIVERED, None, "250 2.0.0 OK (simulated)"),
        (FeedbackEventType.COMPLAINED, None, None),
    ),
    Simulation.DELAYED: (
        (
            FeedbackEventType.DEFERRED,
            RejectReason.TIMED_OUT,
            "451 4.4.1 try again later (simulated)",
        ),
        (FeedbackEventType.DELIVERED, None, "250 2.0.0 OK (simulated)"),
    ),
    # Screened out before sending (simulated_suppressions); should one reach
    # the sandbox anyway, it is refused the way a provider's own list would.
    Simulation.SUPPRESSED: (
        (
            FeedbackEventType.REJECTED,
            RejectReason.OTHER,
            "550 5.7.1 on the suppression list (simulated)",
        ),
    ),
}


def simulated_feedback(
    *,
    provider_msg_id: str,
    message_id_header: str,
    recipients: Sequence[str],
    at: datetime,
) -> list[DeliveryEvent]:
    """The delivery events the sandbox reports for one sent message, per recipient."""
    events: list[DeliveryEvent] = []
    for recipient in dict.fromkeys(bare_address(value) for value in recipients):
        simulation = simulation_for(recipient)
        for step, (event_type, reason, response) in enumerate(_REPORTS[simulation]):
            events.append(
                DeliveryEvent(
                    provider=SANDBOX_PROVIDER,
                    event_type=event_type,
                    event_id=f"{provider_msg_id}:{step}",
                    timestamp=at,
                    message_id=provider_msg_id,
                    recipient=recipient,
                    reject_reason=reason,
                    mta_response=response,
                    description=f"test mode: {simulation.value}",
                    message_id_header=message_id_header,
                    raw={"simulation": simulation.value, "step": step},
                )
            )
    return events
