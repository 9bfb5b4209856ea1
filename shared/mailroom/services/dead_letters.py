"""Operating the dead-letter queue: list what is there, send it back, or throw it away.

The DLQ holds messages whose retries ran out (the worker moves them, with the
reason) and records SQS moved itself at the redrive limit (a crash or timeout
the worker never settled). The messages table stays the source of truth:
listings show each row's status and last error, a redrive sets the row back
to ``queued`` before it re-enqueues the message, and a purge marks any row
still ``queued`` as failed, so no message is ever left claiming to be queued
with nothing on the queue.

Redrives and purges are audited. The queue is SQS, not PostgreSQL, so no
transaction spans both: the audit row is written once the SQS work is done
and says what was done (ids redriven, records purged, rows failed). A call
that fails part way still writes the row for the part that was done, with
the error's code; a call that changed nothing before failing writes none.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.dead_letter_queue import DeadLetter, DeadLetterQueue
from mailroom.adapters.queue import MessageQueue
from mailroom.domain.errors import (
    ConfirmationRequired,
    DeadLetterNotFound,
    DeadLetterQueueUnavailable,
    MailroomError,
)
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.domain.queues import Band
from mailroom.domain.tenancy import SYSTEM_ACTOR, Actor

# How long a reader hides the records it holds: long enough to finish the
# call (API Gateway gives up after 29 s), short enough that a crashed reader
# leaves them hidden only briefly.
HIDE_SECONDS = 30
# Records handled by one redrive or purge call, so it ends inside 29 s; the
# answer says how many remain and the operator repeats it.
MAX_RECORDS_PER_CALL = 200
# Records looked at while searching for one message.
MAX_RECORDS_SCANNED = 1000
PURGED_REASON = "purged from the dead-letter queue by an operator"

# Not sent yet: queued, or claimed by a worker (issue 7).
UNSENT = (MessageStatus.QUEUED, MessageStatus.SENDING)


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    sqs_message_id: str
    message_id: uuid.UUID | None
    status: str | None  # the message row's; None when there is no row
    attempts: int | None
    last_error: str | None  # the row's last error, else why the worker moved it
    reason: str | None
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeadLetterListing:
    queue: str
    approximate_total: int
    messages: list[DeadLetterView]


@dataclass(slots=True)
class RedriveReport:
    redriven: list[uuid.UUID] = field(default_factory=list)
    # Already sent (a duplicate record): removed from the DLQ, not sent again.
    already_sent: list[uuid.UUID] = field(default_factory=list)
    # Left in the DLQ: unreadable bodies, unknown messages.
    skipped: list[dict[str, str]] = field(default_factory=list)
    remaining: int = 0


@dataclass(slots=True)
class PurgeReport:
    purged: int
    marked_failed: int
    remaining: int


def list_dead_letters(uow: UnitOfWork, dlq: DeadLetterQueue, *, limit: int) -> DeadLetterListing:
    letters = dlq.receive(limit, hide_seconds=HIDE_SECONDS)
    try:
        with uow:
            rows = {
                letter.message_id: uow.messages.get(letter.message_id)
                for letter in letters
                if letter.message_id is not None
            }
    finally:
        dlq.release(letters)
    views = [
        _view(letter, rows.get(letter.message_id) if letter.message_id else None)
        for letter in letters
    ]
    return DeadLetterListing(
        queue=dlq.name, approximate_total=dlq.approximate_count(), messages=views
    )


def band_totals(dlq_of: Callable[[Band], DeadLetterQueue]) -> dict[str, int | None]:
    """Each priority band's DLQ's approximate size; None where it is not configured or down.

    One listing then shows an operator which band's DLQ to look at.
    """
    totals: dict[str, int | None] = {}
    for band in (Band.HIGH, Band.NORMAL, Band.LOW):
        try:
            totals[band.value] = dlq_of(band).approximate_count()
        except DeadLetterQueueUnavailable:
            totals[band.value] = None
    return totals


def redrive(
    uow: UnitOfWork,
    dlq: DeadLetterQueue,
    queue: MessageQueue,
    *,
    message_id: uuid.UUID | None = None,
    actor: Actor = SYSTEM_ACTOR,
    band: Band = Band.NORMAL,
) -> RedriveReport:
    """Send one message (``message_id``) or every message in the DLQ back to the send queue.

    ``band``: the priority band whose DLQ ``dlq`` is; its messages go back
    onto that band's send queue.
    """
    report = RedriveReport()
    target = ("message", str(message_id)) if message_id else ("dead_letter_queue", dlq.name)
    try:
        _redrive(uow, dlq, queue, message_id, report, band)
    except Exception as error:
        if report.redriven or report.already_sent:
            _audit(uow, actor, "dlq.redrive", target, _redrive_outcome(report), error)
        raise
    _audit(uow, actor, "dlq.redrive", target, _redrive_outcome(report))
    return report


def _redrive(
    uow: UnitOfWork,
    dlq: DeadLetterQueue,
    queue: MessageQueue,
    message_id: uuid.UUID | None,
    report: RedriveReport,
    band: Band = Band.NORMAL,
) -> None:
    kept: list[DeadLetter] = []
    found = False
    handled = scanned = 0
    try:
        while handled < MAX_RECORDS_PER_CALL and scanned < MAX_RECORDS_SCANNED:
            letters = dlq.receive(
                min(10, MAX_RECORDS_PER_CALL - handled), hide_seconds=HIDE_SECONDS
            )
            if not letters:
                break
            scanned += len(letters)
            for letter in letters:
                if message_id is not None and letter.message_id != message_id:
                    kept.append(letter)
                    continue
                found = True
                handled += 1
                if not _redrive_one(uow, dlq, queue, letter, report, band):
                    kept.append(letter)
            if message_id is not None and found:
                break
    finally:
        dlq.release(kept)
    if message_id is not None and not found:
        raise DeadLetterNotFound(
            f"no record for message {message_id} is in the dead-letter queue "
            f"(looked at {scanned} records)",
            details=[{"message_id": str(message_id)}],
        )
    report.remaining = dlq.approximate_count()


def purge(
    uow: UnitOfWork, dlq: DeadLetterQueue, *, confirm: str | None, actor: Actor = SYSTEM_ACTOR
) -> PurgeReport:
    """Delete what the DLQ holds; ``confirm`` must be the queue's name."""
    if confirm != dlq.name:
        raise ConfirmationRequired(
            f"purging deletes the dead-letter queue's messages for good; "
            f"confirm with the queue's name, '{dlq.name}'",
            details=[{"field": "confirm", "expected": dlq.name}],
        )
    done = PurgeReport(purged=0, marked_failed=0, remaining=0)
    target = ("dead_letter_queue", dlq.name)
    try:
        done = _purge(uow, dlq, done)
    except Exception as error:
        if done.purged or done.marked_failed:
            _audit(uow, actor, "dlq.purge", target, _purge_outcome(done), error)
        raise
    _audit(uow, actor, "dlq.purge", target, _purge_outcome(done))
    return done


def _purge(uow: UnitOfWork, dlq: DeadLetterQueue, done: PurgeReport) -> PurgeReport:
    """``done`` is updated in place as batches finish, so a failure knows what was done."""
    purged = marked = 0
    while purged < MAX_RECORDS_PER_CALL:
        letters = dlq.receive(min(10, MAX_RECORDS_PER_CALL - purged), hide_seconds=HIDE_SECONDS)
        if not letters:
            break
        with uow:
            for letter in letters:
                message = uow.messages.get(letter.message_id) if letter.message_id else None
                # A `sending` row (its worker died; SQS dead-lettered the
                # record) is unfinished too: left alone, the reconciler would
                # send it after the operator chose to drop it.
                if message is not None and message.status in UNSENT:
                    _fail_purged(uow, message)
                    marked += 1
            uow.commit()
        done.marked_failed = marked
        dlq.delete(letters)
        purged += len(letters)
        done.purged = purged
    done.remaining = dlq.approximate_count()
    return done


def _redrive_outcome(report: RedriveReport) -> dict[str, Any]:
    return {
        "redriven": [str(message_id) for message_id in report.redriven],
        "already_sent": [str(message_id) for message_id in report.already_sent],
        "skipped": report.skipped,
        "remaining": report.remaining,
    }


def _purge_outcome(report: PurgeReport) -> dict[str, Any]:
    return {
        "purged": report.purged,
        "marked_failed": report.marked_failed,
        "remaining": report.remaining,
    }


def _audit(
    uow: UnitOfWork,
    actor: Actor,
    action: str,
    target: tuple[str, str],
    outcome: dict[str, Any],
    error: Exception | None = None,
) -> None:
    """The row for SQS work already done (see the module's docstring)."""
    if error is not None:
        code = error.code if isinstance(error, MailroomError) else type(error).__name__
        outcome = {**outcome, "error": code, "completed": False}
    entry = actor.entry(action, target, None, outcome)
    try:
        with uow:
            uow.audit.append(entry)
            uow.commit()
    except Exception as audit_error:
        if error is None:
            raise
        # The caller's error is the one to report; the note says the row is lost.
        error.add_note(f"its audit row could not be written either: {audit_error!r}")


def _redrive_one(
    uow: UnitOfWork,
    dlq: DeadLetterQueue,
    queue: MessageQueue,
    letter: DeadLetter,
    report: RedriveReport,
    band: Band = Band.NORMAL,
) -> bool:
    """True if the record is done with (and deleted); False to leave it in the DLQ."""
    if letter.message_id is None:
        report.skipped.append(
            {"sqs_message_id": letter.sqs_message_id, "reason": "the body names no message"}
        )
        return False
    with uow:
        message = uow.messages.get(letter.message_id)
        if message is None:
            report.skipped.append(
                {"sqs_message_id": letter.sqs_message_id, "reason": "no such message"}
            )
            return False
        if message.status not in (*UNSENT, MessageStatus.FAILED):
            already_sent = True
        else:
            already_sent = False
            # The row first: were the queue first, the worker could take the
            # message while the row still read failed, and skip it for good.
            previous_status, previous_attempts = message.status, message.attempts
            message.status = MessageStatus.QUEUED
            message.attempts = 0  # a fresh budget of attempts after the fix
            uow.messages.save_outcome(message)
            uow.messages.append_event(
                message.id,
                EventType.REDRIVEN,
                {
                    "previous_status": previous_status.value,
                    "previous_attempts": previous_attempts,
                    "sqs_message_id": letter.sqs_message_id,
                },
            )
            uow.commit()
    if already_sent:
        report.already_sent.append(message.id)
    else:
        # If this raises, the row reads queued and the record stays in the DLQ:
        # redriving again finishes the job.
        # Back on the band whose DLQ held it, in its client's fair-queue group.
        queue.enqueue_in(band, message.id, message.trace_id, group_id=str(message.client_id))
        report.redriven.append(message.id)
    dlq.delete([letter])
    return True


def _fail_purged(uow: UnitOfWork, message: Message) -> None:
    message.status = MessageStatus.FAILED
    message.last_error = PURGED_REASON
    uow.messages.save_outcome(message)
    uow.messages.append_event(
        message.id, EventType.FAILED, {"error": PURGED_REASON, "attempts": message.attempts}
    )


def _view(letter: DeadLetter, message: Message | None) -> DeadLetterView:
    return DeadLetterView(
        sqs_message_id=letter.sqs_message_id,
        message_id=letter.message_id,
        status=message.status.value if message else None,
        attempts=message.attempts if message else None,
        last_error=(message.last_error if message else None) or letter.reason,
        reason=letter.reason,
        sent_at=letter.sent_at,
    )
