"""Mail to the bounce domain: tie it to its message by VERP, then feed it back.

Which message a bounce is about is decided by the address it was sent to
alone (the signed VERP return path, domain/return_path.py): a bounce with no
such address, or one whose HMAC does not verify, changes nothing and is kept
as an ``unmatched``/``bad_signature`` record for an operator to review
(``GET /admin/inbound``). What the bounce says (domain/bounces.py) becomes
DeliveryEvents through services/feedback.py, the path every provider webhook
takes: statuses move forward only, each event applies once, suppressions
follow the same rules.

Each piece of mail is recorded once, by the SHA-256 of its bytes: a
redelivery (an SES retry, an SMTP client resending) applies nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from mailroom.adapters.db.inbound_repositories import InboundRecord
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.bounces import (
    FEEDBACK_FOR_KIND,
    BounceKind,
    BounceReport,
    RecipientReport,
    parse_bounce,
)
from mailroom.domain.errors import UnsubscribeLinkNotFound
from mailroom.domain.feedback import DeliveryEvent, Suppression, SuppressionReason, bare_address
from mailroom.domain.model import Message
from mailroom.domain.return_path import SigningKeyring, match_return_path, token_in_mailbox
from mailroom.services import unsubscribe
from mailroom.services.feedback import record_delivery_events

log = logging.getLogger(__name__)
PROVIDER = "inbound"


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    keyring: SigningKeyring | None
    soft_bounce_limit: int = 3
    soft_bounce_suppression_days: int = 7
    max_stored_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class InboundResult:
    outcome: str
    message_id: str | None = None
    applied: int = 0
    duplicate: bool = False
    kind: str | None = None


def receive_inbound_mail(
    uow: UnitOfWork, raw: bytes, envelope_recipients: Sequence[str], policy: InboundPolicy
) -> InboundResult:
    report = parse_bounce(raw)
    addresses = [*envelope_recipients, *report.addressed_to]
    # The same bytes to the same addresses are one delivery, however often
    # they arrive; the same bounce text about another message is not.
    envelope = "\n".join(sorted(envelope_recipients)).encode("utf-8", "replace")
    digest = hashlib.sha256(envelope + b"\0" + raw).hexdigest()

    token = next((t for a in envelope_recipients if (t := token_in_mailbox(a))), None)
    if token is not None:
        return _mailed_unsubscribe(uow, raw, envelope_recipients, report, digest, token, policy)

    match = match_return_path(policy.keyring, addresses) if policy.keyring is not None else None
    message: Message | None = None
    if match is not None and match.message_id is not None:
        with uow:
            message = uow.messages.get(match.message_id)
    if message is None:
        outcome = "bad_signature" if match is not None and match.bad_signature else "unmatched"
        if report.kind is BounceKind.AUTO_REPLY:
            outcome = "auto_reply"
        return _keep(uow, raw, envelope_recipients, report, digest, outcome, None, policy)
    if report.kind is BounceKind.AUTO_REPLY:
        return _keep(uow, raw, envelope_recipients, report, digest, "auto_reply", message, policy)

    attributed = _attributed(report, message)
    events = [
        _event(report, recipient, address, digest, message)
        for recipient, address in attributed
        if recipient.kind in FEEDBACK_FOR_KIND
    ]
    if not events:
        return _keep(uow, raw, envelope_recipients, report, digest, "unrecognised", message, policy)
    # Applied before the record: a crash between the two is repaired by the
    # redelivery, whose events are then duplicates and whose record is new.
    summary = record_delivery_events(uow, events)
    result = _keep(
        uow,
        raw,
        envelope_recipients,
        report,
        digest,
        "applied",
        message,
        policy,
        soft=[address for recipient, address in attributed if recipient.kind is BounceKind.SOFT],
    )
    return InboundResult(
        "applied",
        str(message.id),
        applied=summary.applied + summary.adopted,
        duplicate=result.duplicate,
        kind=report.kind.value,
    )


def _attributed(report: BounceReport, message: Message) -> list[tuple[RecipientReport, str]]:
    """Each reported recipient as the message's own recipient, or dropped.

    The VERP address names the message; the body names the recipient, and
    only a recipient of that message is believed. A forwarder may have
    rewritten it (Final-Recipient is the new address): then the
    Original-Recipient, or the message's only recipient, is the one.
    """
    ours = {bare_address(address): address for address in message.envelope_recipients}
    kept: list[tuple[RecipientReport, str]] = []
    for recipient in report.recipients:
        if recipient.address in ours:
            kept.append((recipient, recipient.address))
        elif recipient.original_address and recipient.original_address in ours:
            kept.append((recipient, recipient.original_address))
        elif len(ours) == 1:
            kept.append((recipient, next(iter(ours))))
    return kept


def _event(
    report: BounceReport, recipient: RecipientReport, address: str, digest: str, message: Message
) -> DeliveryEvent:
    event_type, reject_reason = FEEDBACK_FOR_KIND[recipient.kind]
    return DeliveryEvent(
        provider=PROVIDER,
        event_type=event_type,
        event_id=digest[:40],
        timestamp=datetime.now(UTC),
        message_id=None,
        recipient=address,
        reject_reason=reject_reason,
        mta_response=recipient.diagnostic or recipient.status,
        description=f"{recipient.kind.value} ({report.format.value})",
        # How services/feedback.py finds a message by our own id.
        message_id_header=f"<{message.id}@verp>",
        raw={
            "format": report.format.value,
            "status": recipient.status,
            "action": recipient.action,
            "reported_address": recipient.address,
        },
    )


def _keep(
    uow: UnitOfWork,
    raw: bytes,
    envelope_recipients: Sequence[str],
    report: BounceReport,
    digest: str,
    outcome: str,
    message: Message | None,
    policy: InboundPolicy,
    *,
    soft: Sequence[str] = (),
) -> InboundResult:
    stored = raw[: policy.max_stored_bytes]
    record = InboundRecord(
        outcome=outcome,
        message_id=message.id if message is not None else None,
        envelope_recipients=[address[:320] for address in envelope_recipients][:50],
        sender=(report.sender or "")[:998] or None,
        subject=(report.subject or "")[:998] or None,
        report_format=report.format.value,
        kind=report.kind.value,
        reports=[
            {key: value for key, value in asdict(r).items() if value is not None}
            for r in report.recipients
        ][:100],
        raw_sha256=digest,
        raw=stored,
        raw_truncated=len(stored) < len(raw),
    )
    now = datetime.now(UTC)
    with uow:
        record_id = uow.inbound.add(record)
        if record_id is not None and message is not None:
            for address in soft:
                _count_soft_bounce(uow, address, message, digest, now, policy)
        uow.commit()
    if outcome in ("unmatched", "bad_signature"):
        log.warning(
            "inbound mail kept for review",
            extra={"outcome": outcome, "inbound_id": record_id, "kind": report.kind.value},
        )
    return InboundResult(
        outcome,
        str(message.id) if message is not None else None,
        duplicate=record_id is None,
        kind=report.kind.value,
    )


def _count_soft_bounce(
    uow: UnitOfWork,
    address: str,
    message: Message,
    digest: str,
    now: datetime,
    policy: InboundPolicy,
) -> None:
    """N soft bounces in a row suppress the address until they expire.

    "In a row": a run restarts when the last soft bounce is older than the
    suppression period (the SMTP path sees no deliveries to reset it with).
    The entry is global, like a hard bounce: a full mailbox is full for everyone.
    """
    window = timedelta(days=policy.soft_bounce_suppression_days)
    count = uow.inbound.count_soft_bounce(address, now, now - window)
    if count < policy.soft_bounce_limit:
        return
    uow.suppressions.upsert(
        Suppression(
            address=address,
            reason=SuppressionReason.SOFT_BOUNCE,
            client_id=message.client_id if message.is_test else None,
            expires_at=now + window,
            source=f"{PROVIDER}:{digest[:40]}",
            note=f"{count} soft bounces in a row",
            is_test=message.is_test,
        )
    )
    uow.inbound.reset_soft_bounces(address)


def _mailed_unsubscribe(
    uow: UnitOfWork,
    raw: bytes,
    envelope_recipients: Sequence[str],
    report: BounceReport,
    digest: str,
    token: str,
    policy: InboundPolicy,
) -> InboundResult:
    """Mail to List-Unsubscribe's mailto: address, whatever its body says (RFC 2369)."""
    try:
        summary = unsubscribe.unsubscribe(uow, policy.keyring, token, via="mailto")
    except UnsubscribeLinkNotFound:
        return _keep(uow, raw, envelope_recipients, report, digest, "bad_signature", None, policy)
    result = _keep(uow, raw, envelope_recipients, report, digest, "unsubscribed", None, policy)
    return InboundResult("unsubscribed", applied=summary.applied, duplicate=result.duplicate)
