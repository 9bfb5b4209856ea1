"""Operating the dead-letter queue: list what is there, send it back, or throw it away.

The DLQ holds messages whose retries ran out (the worker moves them, with the
reason) and records SQS moved itself at the redrive limit (a crash or timeout
the worker never settled). The messages table stays the source of truth:
listings show each row's status and last error, a redrive sets the row back
to ``queued`` before it re-enqueues the message, and a purge marks any row
still ``queued`` as failed, so no message is ever left claiming to be queued
with nothing on the queue.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.dead_letter_queue import DeadLetter, DeadLetterQueue
from mailroom.adapters.queue import MessageQueue
from mailroom.domain.errors import ConfirmationRequired, DeadLetterNotFound
from mailroom.domain.model import EventType, Message, MessageStatus

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


@dataclass(frozen=True, slots=True)
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


def redrive(
    uow: UnitOfWork,
    dlq: DeadLetterQueue,
    queue: MessageQueue,
    *,
    message_id: uuid.UUID | None = None,
) -> RedriveReport:
    """Send one message (``message_id``) or every message in the DLQ back to the send queue."""
    report = RedriveReport()
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
                if not _redrive_one(uow, dlq, queue, letter, report):
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
    return report


def purge(uow: UnitOfWork, dlq: DeadLetterQueue, *, confirm: str | None) -> PurgeReport:
    """Delete what the DLQ holds; ``confirm`` must be the queue's name."""
    if confirm != dlq.name:
        raise ConfirmationRequired(
            f"purging deletes the dead-letter queue's messages for good; "
            f"confirm with the queue's name, '{dlq.name}'",
            details=[{"field": "confirm", "expected": dlq.name}],
        )
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
        dlq.delete(letters)
        purged += len(letters)
    return PurgeReport(purged=purged, marked_failed=marked, remaining=dlq.approximate_count())


def _redrive_one(
    uow: UnitOfWork,
    dlq: DeadLetterQueue,
    queue: MessageQueue,
    letter: DeadLetter,
    report: RedriveReport,
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
        queue.enqueue(message.id, message.trace_id)
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
