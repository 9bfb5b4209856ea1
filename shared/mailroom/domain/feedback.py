"""Delivery feedback: what providers report about a message after they accepted it.

Every provider's callback becomes the same ``DeliveryEvent`` with fixed enums
(the django-anymail model), the raw payload kept beside it. The rules that turn
events into message statuses, per-recipient outcomes and suppression entries
live here as tables, so they are the same whichever provider reported.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import getaddresses
from enum import StrEnum
from typing import Any

from mailroom.domain.addresses import BARE_ADDRESS
from mailroom.domain.model import EventType, Message, MessageStatus


class FeedbackEventType(StrEnum):
    """What happened, in Mailroom's words; ``UNKNOWN`` for anything not mapped."""

    QUEUED = "queued"  # the provider accepted it for sending
    SENT = "sent"  # the provider handed it to the recipient's server
    DELIVERED = "delivered"
    DEFERRED = "deferred"  # delayed, the provider keeps trying
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    REJECTED = "rejected"  # the provider refused to send it at all
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    UNKNOWN = "unknown"


class RejectReason(StrEnum):
    """Why a message did not arrive (or was delayed); ``OTHER`` when the provider says no more."""

    INVALID = "invalid"  # the address does not exist
    BOUNCED = "bounced"  # a hard bounce, now or earlier
    TIMED_OUT = "timed_out"
    BLOCKED = "blocked"  # refused by policy (content, reputation, IP)
    SPAM = "spam"
    UNSUBSCRIBED = "unsubscribed"
    OTHER = "other"


class RecipientStatus(StrEnum):
    """One recipient's outcome as the status API shows it."""

    QUEUED = "queued"
    SENT = "sent"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    REJECTED = "rejected"
    COMPLAINED = "complained"
    SUPPRESSED = "suppressed"
    FAILED = "failed"


class SuppressionReason(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    # Issue 16: soft bounces in a row (a full mailbox); such entries expire.
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class SuppressionScope(StrEnum):
    GLOBAL = "global"  # no client may mail the address
    CLIENT = "client"  # only the client whose message caused it


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    """One provider event about one recipient of one message."""

    provider: str
    event_type: FeedbackEventType
    # Unique per provider event; with ``recipient`` it is the deduplication key.
    event_id: str
    timestamp: datetime | None
    # The provider's id for the message (what the send call returned).
    message_id: str | None
    recipient: str | None
    reject_reason: RejectReason | None = None
    # The receiving server's answer (SMTP response, diagnostic code).
    mta_response: str | None = None
    description: str | None = None
    # The Message-ID header the provider saw: ours is ``<message uuid@domain>``,
    # a second way to find the message (SES over SMTP, or a race with the worker).
    message_id_header: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def recipient_address(self) -> str | None:
        return bare_address(self.recipient) if self.recipient else None


@dataclass(slots=True)
class Suppression:
    """An address Mailroom will not send to: for one client, or for everyone."""

    address: str
    reason: SuppressionReason
    client_id: uuid.UUID | None = None
    expires_at: datetime | None = None
    source: str | None = None
    note: str | None = None
    id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Created by test traffic (issue 15): always one client's, and screens
    # that client's test messages only; live mail never sees it.
    is_test: bool = False

    def applies_to(self, message: Message) -> bool:
        """Whether this entry screens ``message``: global or its client's, and of its mode."""
        if self.client_id is not None and self.client_id != message.client_id:
            return False
        return message.is_test or not self.is_test

    @property
    def scope(self) -> SuppressionScope:
        return SuppressionScope.GLOBAL if self.client_id is None else SuppressionScope.CLIENT

    def is_active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What is known about one recipient; ``status`` None until something is."""

    address: str
    status: RecipientStatus | None
    kind: str = "to"
    reject_reason: RejectReason | None = None
    response: str | None = None
    updated_at: datetime | None = None


def bare_address(value: str) -> str:
    """``Ada <Ada@Example.com>`` → ``ada@example.com``: the form suppressions are keyed by.

    The local part is lowercased too: every major mailbox provider treats it
    case-insensitively, and a suppression that a case change could dodge
    would protect nothing.

    An internationalised domain has one form whichever way it is written:
    ``ada@xn--bcher-kva.example`` and ``ada@BÜCHER.example`` are both
    ``ada@bücher.example``, the form email-validator's ``normalized`` gives
    (what an accepted send and an added suppression store), so an entry
    added one way is found, screened and removed the other way.
    """
    if BARE_ADDRESS.fullmatch(value):
        # Nothing getaddresses would take off (no name, comment or quote):
        # a bulk batch's planner reads a million of these (issue 17), a
        # provider's event batch hundreds (issue 21); the parser costs ~50 µs.
        address = value
    else:
        parsed = getaddresses([value])
        address = parsed[0][1] if parsed and parsed[0][1] else value
    bare = address.strip().lower()
    if bare.isascii() and "xn--" not in bare:
        return bare  # the common case: nothing to decode
    local, at, domain = bare.rpartition("@")
    return f"{unicodedata.normalize('NFC', local)}{at}{_unicode_domain(domain)}"


def _unicode_domain(domain: str) -> str:
    """The domain's U-labels (UTS 46 mapping, as email-validator applies); as given if invalid."""
    import idna  # a dependency of email-validator; only IDN addresses need it

    try:
        return str(idna.decode(idna.encode(domain, uts46=True)))
    except (idna.IDNAError, UnicodeError):
        # Not a valid IDN (a provider may report anything): keyed as written.
        return domain


# --- message status --------------------------------------------------------

# The message status an event moves towards. Events absent here (deferred,
# opened, clicked, queued, sent, unsubscribed, unknown) never change it.
MESSAGE_STATUS_FOR_EVENT: dict[FeedbackEventType, MessageStatus] = {
    FeedbackEventType.DELIVERED: MessageStatus.DELIVERED,
    FeedbackEventType.BOUNCED: MessageStatus.BOUNCED,
    FeedbackEventType.REJECTED: MessageStatus.FAILED,
    FeedbackEventType.COMPLAINED: MessageStatus.SPAM,
}

# Statuses only move up this ladder, whatever order events arrive in: a
# delivery reported after a bounce does not resurrect the message, and a
# bounce or complaint after a delivery wins (receivers bounce asynchronously,
# and a complaint proves the mail arrived but was unwanted).
STATUS_RANK: dict[MessageStatus, int] = {
    MessageStatus.SCHEDULED: 0,
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 0,
    MessageStatus.HELD: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.BOUNCED: 3,
    MessageStatus.FAILED: 3,
    MessageStatus.SPAM: 4,
    # Never sent: nothing a provider reports can follow it.
    MessageStatus.CANCELLED: 5,
}


def status_after(current: MessageStatus, event_type: FeedbackEventType) -> MessageStatus | None:
    """The status the event moves the message to, or None if it stays."""
    target = MESSAGE_STATUS_FOR_EVENT.get(event_type)
    if target is None or STATUS_RANK[target] <= STATUS_RANK[current]:
        return None
    return target


def statuses_below(target: MessageStatus) -> list[MessageStatus]:
    """The statuses a message may be in for ``target`` to replace it (the guarded UPDATE)."""
    return [status for status, rank in STATUS_RANK.items() if rank < STATUS_RANK[target]]


# --- per-recipient outcome -------------------------------------------------

RECIPIENT_STATUS_FOR_EVENT: dict[FeedbackEventType, RecipientStatus] = {
    FeedbackEventType.DEFERRED: RecipientStatus.DEFERRED,
    FeedbackEventType.DELIVERED: RecipientStatus.DELIVERED,
    FeedbackEventType.BOUNCED: RecipientStatus.BOUNCED,
    FeedbackEventType.REJECTED: RecipientStatus.REJECTED,
    FeedbackEventType.COMPLAINED: RecipientStatus.COMPLAINED,
}

# The same forward-only rule per recipient. Suppressed is decided before the
# send and nothing a provider says can follow it.
RECIPIENT_RANK: dict[RecipientStatus, int] = {
    RecipientStatus.QUEUED: 0,
    RecipientStatus.SENT: 0,
    RecipientStatus.DEFERRED: 1,
    RecipientStatus.DELIVERED: 2,
    RecipientStatus.BOUNCED: 3,
    RecipientStatus.REJECTED: 3,
    RecipientStatus.FAILED: 3,
    RecipientStatus.COMPLAINED: 4,
    RecipientStatus.SUPPRESSED: 5,
}

# A recipient nobody has reported on reads as the message does.
RECIPIENT_STATUS_FOR_MESSAGE: dict[MessageStatus, RecipientStatus] = {
    MessageStatus.SCHEDULED: RecipientStatus.QUEUED,
    # No recipient status of its own (the message's status says cancelled):
    # like a failed one, it was never handed to a provider.
    MessageStatus.CANCELLED: RecipientStatus.FAILED,
    MessageStatus.QUEUED: RecipientStatus.QUEUED,
    MessageStatus.SENDING: RecipientStatus.QUEUED,
    MessageStatus.HELD: RecipientStatus.QUEUED,
    MessageStatus.SENT: RecipientStatus.SENT,
    MessageStatus.DELIVERED: RecipientStatus.SENT,
    MessageStatus.BOUNCED: RecipientStatus.SENT,
    MessageStatus.SPAM: RecipientStatus.SENT,
    MessageStatus.FAILED: RecipientStatus.FAILED,
    MessageStatus.CANCELLED: RecipientStatus.FAILED,
}


# --- suppression -----------------------------------------------------------

# (event, reject reason) → the entry it creates. A hard bounce is global: the
# mailbox does not exist for anyone, and every client shares the providers'
# sending reputation. A complaint or unsubscribe is about one sender, so it
# binds only the client whose mail caused it. Provider-side drops ("rejected")
# because the provider already suppresses the address are copied too, so that
# falling over to another provider does not mail it again.
SUPPRESSION_RULES: dict[
    tuple[FeedbackEventType, RejectReason | None], tuple[SuppressionReason, SuppressionScope]
] = {
    (FeedbackEventType.BOUNCED, RejectReason.BOUNCED): (
        SuppressionReason.HARD_BOUNCE,
        SuppressionScope.GLOBAL,
    ),
    (FeedbackEventType.BOUNCED, RejectReason.INVALID): (
        SuppressionReason.HARD_BOUNCE,
        SuppressionScope.GLOBAL,
    ),
    (FeedbackEventType.REJECTED, RejectReason.BOUNCED): (
        SuppressionReason.HARD_BOUNCE,
        SuppressionScope.GLOBAL,
    ),
    (FeedbackEventType.REJECTED, RejectReason.INVALID): (
        SuppressionReason.HARD_BOUNCE,
        SuppressionScope.GLOBAL,
    ),
    (FeedbackEventType.COMPLAINED, RejectReason.SPAM): (
        SuppressionReason.COMPLAINT,
        SuppressionScope.CLIENT,
    ),
    (FeedbackEventType.COMPLAINED, None): (SuppressionReason.COMPLAINT, SuppressionScope.CLIENT),
    (FeedbackEventType.REJECTED, RejectReason.SPAM): (
        SuppressionReason.COMPLAINT,
        SuppressionScope.CLIENT,
    ),
    (FeedbackEventType.UNSUBSCRIBED, None): (
        SuppressionReason.UNSUBSCRIBE,
        SuppressionScope.CLIENT,
    ),
    (FeedbackEventType.UNSUBSCRIBED, RejectReason.UNSUBSCRIBED): (
        SuppressionReason.UNSUBSCRIBE,
        SuppressionScope.CLIENT,
    ),
    (FeedbackEventType.REJECTED, RejectReason.UNSUBSCRIBED): (
        SuppressionReason.UNSUBSCRIBE,
        SuppressionScope.CLIENT,
    ),
}


def suppression_for(
    event: DeliveryEvent, client_id: uuid.UUID
) -> tuple[SuppressionReason, uuid.UUID | None] | None:
    """The suppression entry an event about ``client_id``'s message creates, if any.

    Soft bounces, blocks and delays create none: the address may work later.
    """
    rule = SUPPRESSION_RULES.get((event.event_type, event.reject_reason))
    if rule is None or not event.recipient:
        return None
    reason, scope = rule
    return reason, None if scope is SuppressionScope.GLOBAL else client_id


# --- the message's own history ---------------------------------------------

# How a provider event appears in ``message_events`` (the client-visible
# history). The provider's "queued"/"sent" become ``provider_accepted`` so they
# are not mistaken for the worker's own ``sent``.
HISTORY_EVENT_FOR_FEEDBACK: dict[FeedbackEventType, EventType] = {
    FeedbackEventType.QUEUED: EventType.PROVIDER_ACCEPTED,
    FeedbackEventType.SENT: EventType.PROVIDER_ACCEPTED,
    FeedbackEventType.DELIVERED: EventType.DELIVERED,
    FeedbackEventType.DEFERRED: EventType.DEFERRED,
    FeedbackEventType.BOUNCED: EventType.BOUNCED,
    FeedbackEventType.COMPLAINED: EventType.COMPLAINED,
    FeedbackEventType.REJECTED: EventType.REJECTED,
    FeedbackEventType.OPENED: EventType.OPENED,
    FeedbackEventType.CLICKED: EventType.CLICKED,
    FeedbackEventType.UNSUBSCRIBED: EventType.UNSUBSCRIBED,
    FeedbackEventType.UNKNOWN: EventType.PROVIDER_EVENT,
}


def message_uuid_from_header(message_id_header: str | None) -> uuid.UUID | None:
    """Our message id from a Message-ID we wrote (``<uuid@domain>``), else None."""
    if not message_id_header:
        return None
    local = message_id_header.strip().strip("<>").partition("@")[0]
    try:
        return uuid.UUID(local)
    except ValueError:
        return None


def provider_id_candidates(provider_msg_id: str) -> list[str]:
    """The forms a provider message id may have been stored in.

    Mailgun returns ``<id@domain>`` from its send API but reports ``id@domain``
    in events; SMTP stores our Message-ID without brackets. Both are tried.
    """
    bare = provider_msg_id.strip().strip("<>")
    return list(dict.fromkeys([provider_msg_id, bare, f"<{bare}>"]))
