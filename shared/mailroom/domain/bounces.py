"""Reading inbound bounce mail: RFC 3464 DSNs, RFC 5965 (ARF) complaints, and the rest.

Bounce mail is written by whoever can reach our bounce address, so nothing
here decides *which message* a bounce is about: the VERP return path it was
sent to does (domain/return_path.py). This module only says *what* the mail
reports: which recipients failed, how (hard, soft, delayed, blocked), or that
someone complained, or that it is an auto-reply, which is never a bounce.

The order of the readers matters:

1. An RFC 3464 ``message/delivery-status`` part: Final-Recipient (or
   Original-Recipient), Action, Status, Diagnostic-Code, per recipient.
2. An RFC 5965 ``message/feedback-report`` part: Feedback-Type and
   Original-Rcpt-To; or Microsoft's JMRP form of a complaint (the reported
   message attached with its recipient in ``X-HmXmrOriginalRecipient``).
3. An auto-reply (RFC 3834 headers, a vacation subject) that is not from a
   mail system: nothing, whatever addresses it quotes.
4. ``X-Failed-Recipients`` (Exim, Gmail): the addresses, with the first
   enhanced status code of the text part.
5. flufl.bounce's detectors for the non-standard formats they know
   (addresses only: permanent failures are hard, its warnings delayed).

Everything is parsed with the stdlib ``email`` package; flufl.bounce is
imported only when the first four find nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses
from enum import StrEnum

from mailroom.domain.feedback import FeedbackEventType, RejectReason, bare_address

# Bounce mail beyond this is not parsed (a bounce quoting a huge message):
# its first part is read, the rest is cut. The raw mail is kept whole.
MAX_PARSED_BYTES = 512 * 1024


class BounceKind(StrEnum):
    """What one recipient's report (or the whole mail) amounts to."""

    HARD = "hard"  # the address does not work: suppress it
    SOFT = "soft"  # a failure that may pass (mailbox full, expired): counted
    BLOCKED = "blocked"  # refused by policy (5.7.x): the message, not the address
    DELAYED = "delayed"  # a warning: the remote server keeps trying
    COMPLAINT = "complaint"  # the recipient reported the mail as spam
    AUTO_REPLY = "auto_reply"  # a vacation reply: never a bounce
    UNRECOGNISED = "unrecognised"  # no report found in it


class ReportFormat(StrEnum):
    DSN = "dsn"  # RFC 3464
    ARF = "arf"  # RFC 5965
    # Microsoft's junk mail reporting program (Outlook.com, Hotmail): the
    # reported message attached, its recipient in X-HmXmrOriginalRecipient.
    JMRP = "jmrp"
    X_FAILED_RECIPIENTS = "x_failed_recipients"
    FLUFL = "flufl"  # one of flufl.bounce's detectors
    AUTO_REPLY = "auto_reply"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One recipient's fate as the bounce tells it."""

    address: str
    kind: BounceKind
    status: str | None = None  # the enhanced status code, e.g. "5.1.1"
    action: str | None = None
    diagnostic: str | None = None
    # RFC 3464 Original-Recipient, when it differs from the final one (a
    # forwarder rewrote the address): what our message was sent to.
    original_address: str | None = None


@dataclass(frozen=True, slots=True)
class BounceReport:
    format: ReportFormat
    recipients: tuple[RecipientReport, ...] = ()
    # ARF's Feedback-Type ("abuse", "fraud"...), for complaints.
    feedback_type: str | None = None
    # The Message-ID of the message the report quotes, if it quotes one.
    # Shown for review only: matching never trusts it.
    original_message_id: str | None = None
    subject: str | None = None
    sender: str | None = None
    # The addresses the mail's own headers say it was for (To, Delivered-To,
    # X-Original-To): where a VERP address is looked for beside the envelope.
    addressed_to: tuple[str, ...] = ()

    @property
    def kind(self) -> BounceKind:
        """The mail's overall kind: its most serious recipient report."""
        if self.format is ReportFormat.AUTO_REPLY:
            return BounceKind.AUTO_REPLY
        kinds = {report.kind for report in self.recipients}
        for kind in _SEVERITY:
            if kind in kinds:
                return kind
        return BounceKind.UNRECOGNISED


_SEVERITY = (
    BounceKind.COMPLAINT,
    BounceKind.HARD,
    BounceKind.BLOCKED,
    BounceKind.SOFT,
    BounceKind.DELAYED,
)

# A report kind becomes this feedback event and reject reason (domain/feedback.py
# turns those into statuses and suppressions, as for every provider).
FEEDBACK_FOR_KIND: dict[BounceKind, tuple[FeedbackEventType, RejectReason | None]] = {
    BounceKind.HARD: (FeedbackEventType.BOUNCED, RejectReason.BOUNCED),
    BounceKind.SOFT: (FeedbackEventType.BOUNCED, RejectReason.OTHER),
    BounceKind.BLOCKED: (FeedbackEventType.BOUNCED, RejectReason.BLOCKED),
    BounceKind.DELAYED: (FeedbackEventType.DEFERRED, None),
    BounceKind.COMPLAINT: (FeedbackEventType.COMPLAINED, RejectReason.SPAM),
}

# Enhanced status codes (RFC 3463) that are failures of the moment even when
# the class is 5: a full mailbox, a delivery that timed out. Counted as soft.
SOFT_PERMANENT_STATUSES = frozenset({"5.2.2", "5.4.7", "5.3.4"})

_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_REPLY = re.compile(r"\b([245])\d\d\b")
_DAEMON_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mailer_daemon"}
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|"
    r"abwesenheitsnotiz|r[ée]ponse automatique|on vacation|vacation reply)",
    re.IGNORECASE,
)
_MAILBOX_FULL = re.compile(
    r"disk quota|over ?quota|quota exceeded|mailbox (is )?full|insufficient storage",
    re.IGNORECASE,
)
_IGNORED_ACTIONS = frozenset({"delivered", "relayed", "expanded"})


def parse_bounce(raw: bytes) -> BounceReport:
    """What the bounce mail ``raw`` reports (never raises on malformed mail)."""
    message = message_from_bytes(raw[:MAX_PARSED_BYTES], policy=compat32)
    subject = _header_text(message, "subject")
    sender = _header_text(message, "from")
    addressed_to = tuple(
        address
        for name in ("to", "delivered-to", "x-original-to")
        for _, address in getaddresses([str(v) for v in message.get_all(name, [])])
        if "@" in address
    )
    found = _read_dsn(message) or _read_arf(message) or _read_microsoft_jmrp(message)
    if found is None and _is_auto_reply(message, sender, subject):
        return BounceReport(
            ReportFormat.AUTO_REPLY, subject=subject, sender=sender, addressed_to=addressed_to
        )
    if found is None:
        found = _read_x_failed_recipients(message) or _read_with_flufl(message)
    if found is None:
        return BounceReport(
            ReportFormat.NONE, subject=subject, sender=sender, addressed_to=addressed_to
        )
    report_format, recipients, feedback_type = found
    return BounceReport(
        report_format,
        tuple(recipients),
        feedback_type=feedback_type,
        original_message_id=_quoted_message_id(message),
        subject=subject,
        sender=sender,
        addressed_to=addressed_to,
    )


_Found = tuple[ReportFormat, list[RecipientReport], str | None]


# --- RFC 3464 ------------------------------------------------------------------


def _read_dsn(message: Message) -> _Found | None:
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = _header_blocks(part)
        # The first block is per-message (Reporting-MTA...); the rest are
        # per-recipient. Some MTAs run them together: any block naming a
        # recipient counts.
        recipients: dict[str, RecipientReport] = {}
        for block in blocks:
            report = _dsn_recipient(block)
            if report is not None:
                recipients.setdefault(report.address, report)
        if recipients:
            return ReportFormat.DSN, list(recipients.values()), None
    return None


def _header_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):
        # A delivery-status part the parser left as text (an odd encoding):
        # its blank-line separated blocks are header blocks.
        from email.parser import HeaderParser

        text = payload.replace("\r\n", "\n")
        return [HeaderParser().parsestr(block.strip() + "\n") for block in text.split("\n\n")]
    return []


def _dsn_recipient(block: Message) -> RecipientReport | None:
    final = _typed_address(block.get("final-recipient"))
    original = _typed_address(block.get("original-recipient"))
    address = final or original
    if address is None:
        return None
    action = (_clean(block.get("action")) or "").lower().split(" ")[0] or None
    if action in _IGNORED_ACTIONS:
        return None
    status_text = _clean(block.get("status"))
    diagnostic = _clean(block.get("diagnostic-code"))
    status = _status_code(status_text) or _status_code(diagnostic)
    kind = _kind_for(action, status, status_text, diagnostic)
    return RecipientReport(
        address=address,
        kind=kind,
        status=status,
        action=action,
        diagnostic=diagnostic,
        original_address=original if original and original != address else None,
    )


def _kind_for(
    action: str | None, status: str | None, status_text: str | None, diagnostic: str | None
) -> BounceKind:
    if action == "delayed":
        return BounceKind.DELAYED
    klass = status[0] if status else _reply_class(status_text) or _reply_class(diagnostic)
    if status in SOFT_PERMANENT_STATUSES or klass == "4" or _says_full(status_text, diagnostic):
        # Action "failed" with a 4.x.x: the remote server gave up on a
        # temporary condition (4.4.7 expired, 4.2.2 mailbox full).
        return BounceKind.SOFT
    if status is not None and status.startswith("5.7."):
        return BounceKind.BLOCKED
    return BounceKind.HARD


def _says_full(*texts: str | None) -> bool:
    """A 5.0.0 that explains itself as a full mailbox (PMDF, older Exchange) is soft."""
    return any(text and _MAILBOX_FULL.search(text) for text in texts)


def _typed_address(value: str | None) -> str | None:
    """``rfc822; Ada@Example.com`` → ``ada@example.com``; None for other types (x400...)."""
    text = _clean(value)
    if not text:
        return None
    kind, sep, address = text.partition(";")
    if not sep:
        kind, address = "rfc822", text
    if kind.strip().lower() not in ("rfc822", "rfc5321", "utf-8"):
        return None
    address = address.strip().strip("<>").strip()
    if "@" not in address or " " in address:
        return None
    return bare_address(address)


def _status_code(text: str | None) -> str | None:
    if not text:
        return None
    match = _STATUS_CODE.search(text)
    return f"{match[1]}.{int(match[2])}.{int(match[3])}" if match else None


def _reply_class(text: str | None) -> str | None:
    if not text:
        return None
    match = _SMTP_REPLY.search(text)
    return match[1] if match else None


# --- RFC 5965 ------------------------------------------------------------------


def _read_arf(message: Message) -> _Found | None:
    for part in message.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        fields = _feedback_fields(part)
        if fields is None:
            continue
        feedback_type = (_clean(fields.get("feedback-type")) or "").lower() or None
        if feedback_type in (None, "not-spam", "auth-failure", "dmarc"):
            # Not a complaint: a DMARC failure report, or a "this is fine".
            return None
        addresses = [_typed_address(value) for value in fields.get_all("original-rcpt-to", [])] or [
            _quoted_recipient(message)
        ]
        recipients = [
            RecipientReport(address=address, kind=BounceKind.COMPLAINT, action=feedback_type)
            for address in dict.fromkeys(addresses)
            if address
        ]
        return ReportFormat.ARF, recipients, feedback_type
    return None


def _feedback_fields(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    if isinstance(payload, str):
        from email.parser import HeaderParser

        return HeaderParser().parsestr(payload.lstrip("\r\n"))
    return None


def _read_microsoft_jmrp(message: Message) -> _Found | None:
    """Outlook.com's complaint: no feedback-report part, the recipient in the quoted headers."""
    for quoted in _quoted_parts(message):
        recipient = _clean(quoted.get("x-hmxmroriginalrecipient"))
        if recipient and "@" in recipient:
            report = RecipientReport(
                address=bare_address(recipient), kind=BounceKind.COMPLAINT, action="abuse"
            )
            return ReportFormat.JMRP, [report], "abuse"
    return None


# --- auto-replies ----------------------------------------------------------------


def _is_auto_reply(message: Message, sender: str | None, subject: str | None) -> bool:
    """A vacation or other automatic answer from a person's mailbox, not a mail system.

    Many bounces carry ``Auto-Submitted: auto-replied`` too (it means "a
    machine wrote this"), so that header alone decides nothing: the sender
    must not be a mail system, and a delivery report is never an auto-reply.
    """
    if message.get_content_type() == "multipart/report":
        return False
    if sender and _is_mail_system(sender):
        return False
    if (_clean(message.get("x-autoreply")) or "").lower() == "yes":
        return True
    if message.get("x-autorespond") is not None:
        return True
    if (_clean(message.get("precedence")) or "").lower() == "auto_reply":
        return True
    auto_submitted = (_clean(message.get("auto-submitted")) or "").lower()
    if auto_submitted.startswith("auto-replied"):
        return True
    return bool(subject and _AUTO_REPLY_SUBJECT.search(subject))


def _is_mail_system(sender: str) -> bool:
    parsed = getaddresses([sender])
    address = parsed[0][1] if parsed else sender
    local = address.rpartition("@")[0].lower()
    return local in _DAEMON_LOCAL_PARTS


# --- non-standard formats ------------------------------------------------------------


def _read_x_failed_recipients(message: Message) -> _Found | None:
    values = message.get_all("x-failed-recipients", [])
    addresses = [address for _, address in getaddresses([str(v) for v in values]) if "@" in address]
    if not addresses:
        return None
    text = _first_text(message)
    status = _status_code(text)
    if status is None:
        kind = BounceKind.SOFT if _reply_class(text) == "4" else BounceKind.HARD
    else:
        kind = _kind_for("failed", status, None, None)
    recipients = [
        RecipientReport(address=bare_address(address), kind=kind, status=status)
        for address in dict.fromkeys(addresses)
    ]
    return ReportFormat.X_FAILED_RECIPIENTS, recipients, None


def _read_with_flufl(message: Message) -> _Found | None:
    from flufl.bounce import all_failures  # only for mail nothing standard explains

    try:
        temporary, permanent = all_failures(message)
    except Exception:  # noqa: BLE001 - a detector tripping on odd mail finds nothing
        return None
    recipients: dict[str, RecipientReport] = {}
    for raw_address, kind in [
        *((address, BounceKind.HARD) for address in permanent),
        *((address, BounceKind.DELAYED) for address in temporary),
    ]:
        address = _decoded(raw_address)
        if address and "@" in address and address not in recipients:
            recipients[address] = RecipientReport(address=address, kind=kind)
    if not recipients:
        return None
    return ReportFormat.FLUFL, list(recipients.values()), None


def _decoded(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return bare_address(text.strip().strip("<>"))


# --- helpers -------------------------------------------------------------------------


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _header_text(message: Message, name: str) -> str | None:
    value = message.get(name)
    if value is None:
        return None
    from email.header import decode_header, make_header

    try:
        return _clean(str(make_header(decode_header(str(value)))))
    except (ValueError, LookupError, UnicodeError):
        return _clean(value)


def _first_text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload[:16_384].decode(part.get_content_charset() or "latin-1", "replace")
    return ""


def _quoted_parts(message: Message) -> list[Message]:
    quoted: list[Message] = []
    for part in message.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                quoted.append(payload[0])
            elif isinstance(payload, str):
                from email.parser import HeaderParser

                quoted.append(HeaderParser().parsestr(payload.lstrip("\r\n")))
    return quoted


def _quoted_message_id(message: Message) -> str | None:
    for quoted in _quoted_parts(message):
        value = _clean(quoted.get("message-id"))
        if value:
            return value
    return None


def _quoted_recipient(message: Message) -> str | None:
    """The To of the quoted message: where an ARF report without Original-Rcpt-To points."""
    for quoted in _quoted_parts(message):
        for _, address in getaddresses([str(v) for v in quoted.get_all("to", [])]):
            if "@" in address:
                return bare_address(address)
    return None
