"""Bulk batches (issue 17): accept, start, plan, follow, cancel and retry a batch.

The API only stores the batch (inline recipients as posted, or an upload
URL) and asks the planner queue for it; the planner writes one message per
recipient in chunks and enqueues them for the worker. Every chunk moves the
batch's cursor in its own transaction, so the planner can stop anywhere
(killed, or out of time) and the next run continues at the cursor.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from mailroom.adapters.db.batches import Batch, Issue, RecipientOutcome, StagedRecipients, stage
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.inline_content import InlineContentStore
from mailroom.adapters.queue import MessageQueue, PlannerQueue, QueueEntry
from mailroom.adapters.recipient_files import RecipientFiles, frozen_key, upload_key
from mailroom.adapters.templates import TemplateRenderer, TemplateStore, subject_too_long
from mailroom.adapters.tenancy import QuotaCounter
from mailroom.domain.addresses import SANDBOX_DOMAIN, SPECIAL_USE_REFUSAL
from mailroom.domain.batches import (
    MAX_LINE_BYTES,
    MAX_UPLOAD_BYTES,
    BatchRequest,
    BatchStatus,
    IssueStatus,
    PlannedRecipient,
    RecipientRecord,
    UploadFormat,
    check_address,
    csv_columns,
    csv_records,
    inline_records,
    ndjson_records,
    split_lines,
)
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import (
    BatchConflict,
    BatchNotFound,
    DependencyUnavailable,
    EnqueueFailed,
    InvalidRequest,
    MailroomError,
    NoEmailColumn,
    QuotaExceeded,
    UploadMissing,
    UploadTooLarge,
)
from mailroom.domain.mime import subject_fits
from mailroom.domain.model import Client, MessageStatus, SendOptions
from mailroom.domain.outgoing_headers import validate_caller_headers
from mailroom.domain.queues import DEFAULT_QUEUE_NAME, QueueState
from mailroom.domain.scheduling import queue_delay_seconds
from mailroom.domain.tenancy import KeyKind
from mailroom.domain.tracking import layered
from mailroom.services import queues
from mailroom.services.quotas import BatchQuotaCharge
from mailroom.services.read_ahead import read_ahead
from mailroom.services.scheduled_batches import release_batch_if_near
from mailroom.services.sending import (
    RunLink,
    SendLimits,
    Timing,
    bulk_of,
    check_send,
    refuse_sandbox_addresses,
    relay_of,
)

# Messages enqueued per read when catching up after a restart.
_ENQUEUE_PAGE = 1000
# A scheduled batch's planner record may come this early (clocks differ);
# the worker's claim allows the same for a scheduled message.
_EARLY_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class BatchLimits:
    default_from: str
    upload_url_seconds: int
    # Issue 18: a scheduled batch due within this many seconds goes to the
    # planner at once, held back by SQS until its time.
    schedule_lookahead_seconds: int = 90


@dataclass(frozen=True, slots=True)
class AcceptedBatch:
    batch: Batch
    upload_url: str | None = None
    upload_expires_at: datetime | None = None
    # Issue 18: scheduled_at had passed; the batch is planned now.
    in_past: bool = False
    # Issue 20: the batch's queue is paused: its messages are planned held.
    held_by: str | None = None


def accept_batch(
    uow: UnitOfWork,
    templates: TemplateStore,
    planner: PlannerQueue,
    files: RecipientFiles,
    limits: BatchLimits,
    *,
    client: Client,
    request: BatchRequest,
    trace_id: str,
    mode: KeyKind = KeyKind.LIVE,
    contents: InlineContentStore | None = None,
    check_sender: Callable[[str], None] | None = None,
    now: datetime | None = None,
    run: RunLink | None = None,
    quota: BatchQuotaCharge | None = None,
    resolve_relay: Callable[[str], uuid.UUID] | None = None,
) -> AcceptedBatch:
    """Store the batch; inline recipients are planned at once, an upload waits for start.

    The content is checked as a single send's is, once for the batch: the
    sender and reply-to addresses, the subject, the template this client may
    use (422 before anything is written). Each recipient's address and props
    are that recipient's outcome, never the batch's 422. With a future
    ``scheduled_at`` (issue 18) an inline batch waits as ``scheduled`` and is
    planned at its time (services/scheduled_batches.py); a time already past
    plans it now. ``run``: the recurring schedule run that created it.
    are that recipient's outcome, never the batch's 422.

    ``quota`` (live mode): every inline recipient is counted against the
    client's daily limit and monthly quota once the request is valid, all or
    none: a batch that does not fit is refused as ``/v1/send`` refuses (429
    ``quota_exceeded`` or ``daily_limit_exceeded``) and nothing is written.
    The planner gives back the recipients that get no message. An upload's
    recipients are counted as the planner reads them (``plan_batch``).

    ``queue`` and ``smtp_config`` (issue 20) are resolved here, as a single
    send's are, before anything is written: an unknown queue is 422
    unknown_queue, a draining one 409 queue_draining, an unknown or inactive
    relay (``resolve_relay``) 422 unknown_smtp_config. The relay is the
    batch's, else its queue's, else the client's default (the worker's);
    the queue's bulk and tracking apply as to a single send. The planner
    assigns the messages to the queue, on its band; while it is paused they
    are written ``held`` and its resume releases them.
    """
    now = now or datetime.now(UTC)
    timing = Timing.of(request.scheduled_at, now)
    test = mode is KeyKind.TEST
    if not test:
        refuse_sandbox_addresses(request)
    if request.subject and not subject_fits(request.subject):
        raise subject_too_long(request.subject)
    if check_sender is not None and request.from_:
        check_sender(request.from_)  # SENDER_VERIFICATION (issue 16)
    relay_id = relay_of(request.smtp_config, resolve_relay)
    with uow:
        placement = queues.place(uow, client.id, request.queue)
        uow.commit()  # the client's default queue, made on first use
    content = request.content()
    inline = request.inline_content
    if inline is None:
        assert request.template is not None  # SendRequest: a template or inline content
        source = templates.get(request.template, request.template_version, client_id=client.id)
        # A bulk template makes every message of the batch bulk (issue 16):
        # each has one recipient, so only an explicit "bulk": false is refused.
        bulk = bulk_of(
            source,
            requested=request.bulk,
            explicit="bulk" in request.model_fields_set,
            one_recipient=True,
        )
        template_tracking = source.tracking
        # What the worker renders is pinned here, as a single send pins it.
        content["resolved_version"] = source.version
        content["resolved_shared"] = source.shared
    else:
        # Inline content (issue 17): stored once by hash, named like a template;
        # each recipient's props are checked by the worker's render, as a
        # template's are (a missing prop is that recipient's failure).
        if contents is None:
            raise InvalidRequest("inline content is not available here: name a template")
        contents.save(inline)
        bulk = request.bulk
        template_tracking = None
        content["template"] = inline.template_name
        content["subject"] = None
        content["resolved_version"] = None
        content["resolved_shared"] = None
    content["resolved_from"] = request.from_ or limits.default_from
    # Headers, tags, bulk (List-Unsubscribe) and campaign, as a single send's
    # (issue 16); tracking, the template's default under the batch's own (issue 21).
    options = SendOptions(
        headers=validate_caller_headers(request.headers),
        tags=tuple(request.tags),
        bulk=bulk,
        campaign=request.campaign,
        unsubscribe_url=request.unsubscribe_url,
        smtp_config_id=relay_id,
        tracking=layered(
            template_tracking, None if request.tracking is None else request.tracking.as_pairs()
        ),
    )
    # Issue 20: the queue's bulk, tracking and relay, under the batch's own.
    content["resolved_options"] = queues.placed_options(
        options, placement.queue, single=True
    ).to_document()
    if placement.queue.name != DEFAULT_QUEUE_NAME:
        content["resolved_queue_id"] = str(placement.queue.id)
    held_by = placement.queue.name if placement.held else None
    upload = request.recipients_upload
    if upload:
        status = BatchStatus.AWAITING_UPLOAD
    else:
        status = BatchStatus.SCHEDULED if timing.deferred else BatchStatus.ACCEPTED
    batch = Batch(
        id=uuid.uuid4(),
        client_id=client.id,
        status=status,
        trace_id=trace_id,
        content=content,
        allow_duplicates=request.allow_duplicates,
        is_test=test,
        source="upload" if upload else "inline",
        upload_format=request.upload_format if upload else None,
        total=None if upload else len(request.recipients),
        scheduled_at=timing.scheduled_at,
        schedule_id=run.schedule_id if run else None,
        schedule_run_id=run.run_id if run else None,
    )
    recipients = (
        None
        if upload
        else [{"email": r.to, "props": r.props, "metadata": r.metadata} for r in request.recipients]
    )
    if upload:
        with uow:
            uow.batches.add(batch, recipients)
            uow.commit()
        expires = datetime.now(UTC) + timedelta(seconds=limits.upload_url_seconds)
        url = files.upload_url(
            upload_key(client.id, batch.id),
            limits.upload_url_seconds,
            "text/csv" if batch.upload_format is UploadFormat.CSV else "application/x-ndjson",
        )
        return AcceptedBatch(batch, url, expires, in_past=timing.in_past, held_by=held_by)
    # Test mode is never charged (issue 15).
    charge = quota if quota is not None and not test else None
    if charge is not None:
        charge.take_all(len(request.recipients))
    try:
        with uow:
            uow.batches.add(batch, recipients)
            uow.commit()
        if batch.status is BatchStatus.SCHEDULED:
            release_batch_if_near(
                uow, planner, batch, now=now, lookahead_seconds=limits.schedule_lookahead_seconds
            )
        else:
            _request_planning_or_fail(uow, planner, batch)
    except BaseException:
        # Not accepted after all (the database, or the planner queue, failed).
        if charge is not None:
            charge.give_back(charge.counted)
        raise
    return AcceptedBatch(batch, in_past=timing.in_past, held_by=held_by)


# A schedule's batch payload (issue 18) is rendered once per distinct shape of
# its recipients' props (keys, nesting, list lengths), up to this many shapes:
# a missing prop or a bad index depends on the shape, rarely on the values.
MAX_SHAPES_CHECKED = 20
# Fields of a batch request that a single send does not have.
_BATCH_ONLY_FIELDS = frozenset(
    {"to", "cc", "bcc", "recipients", "recipients_upload", "upload_format", "allow_duplicates"}
)


def check_batch(
    templates: TemplateStore,
    renderer: TemplateRenderer,
    limits: SendLimits,
    *,
    client: Client,
    request: BatchRequest,
    mode: KeyKind = KeyKind.LIVE,
    resolve_relay: Callable[[str], uuid.UUID] | None = None,
    check_queue: Callable[[str | None], None] | None = None,
    check_sender: Callable[[str], None] | None = None,
) -> None:
    """Everything a batch would refuse, and more, with nothing written (issue 18's schedules).

    A recurring schedule's batch is checked when the schedule is made, not
    at 3 a.m.: every recipient's address (a bad one is a 422 naming it, where
    a posted batch records it for that recipient), then its relay and queue
    as ``accept_batch`` checks them (``resolve_relay``, ``check_queue``:
    422 unknown_smtp_config, 422 unknown_queue, 409 queue_draining), then
    the content as /v1/send checks it (template, sender, subject, headers,
    and a render with each distinct shape of the recipients' props, so a
    missing prop is found).
    """
    bad: list[dict[str, Any]] = []
    for index, recipient in enumerate(request.recipients):
        checked = check_address(RecipientRecord(index, None, address=recipient.to))
        if (
            isinstance(checked, PlannedRecipient)
            and mode is not KeyKind.TEST
            and SANDBOX_DOMAIN in checked.bare
        ):
            checked = f"not a valid email address: {SPECIAL_USE_REFUSAL}"
        if isinstance(checked, str):
            bad.append(
                {"field": f"recipients.{index}.to", "type": "validation_error", "message": checked}
            )
    if bad:
        raise InvalidRequest(
            f"{len(bad)} recipient address(es) are not valid; the first is "
            f"{bad[0]['field']}: {bad[0]['message']}",
            details=bad[:100],
        )
    # The batch's relay and queue, once (not per shape below), as accept_batch
    # checks them: a relay without a resolver refused as there.
    relay_of(request.smtp_config, resolve_relay)
    if check_queue is not None:
        check_queue(request.queue)
    if check_sender is not None and request.from_:
        check_sender(request.from_)  # SENDER_VERIFICATION (issue 16), as accept_batch
    single = request.model_dump(
        mode="json",
        by_alias=True,
        exclude_none=True,
        exclude=set(_BATCH_ONLY_FIELDS) | {"smtp_config", "queue"},
    )
    shapes: set[str] = set()
    for index, recipient in enumerate(request.recipients):
        props = {**request.props, **recipient.props}
        shape = json.dumps(_shape(props), sort_keys=True)
        if shape in shapes:
            continue
        if len(shapes) >= MAX_SHAPES_CHECKED:
            return
        shapes.add(shape)
        try:
            send = SendRequest.model_validate({**single, "to": [recipient.to], "props": props})
            check_send(templates, renderer, limits, client=client, request=send, mode=mode)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidRequest(
                f"recipients.{index}: {where}: {first['msg']}",
                details=[{"field": f"recipients.{index}.{where}", "type": first["type"]}],
            ) from None
        except MailroomError as error:
            # The single send's refusal (its code kept), naming the recipient.
            error.message = f"recipients.{index}: {error.message}"
            error.details = [{"field": f"recipients.{index}"}, *error.details]
            raise


def _shape(value: Any) -> Any:
    """What of a props value decides whether a template renders: keys, nesting, list lengths."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return type(value).__name__


def _request_planning_or_fail(uow: UnitOfWork, planner: PlannerQueue, batch: Batch) -> None:
    try:
        planner.request_planning(batch.id, batch.trace_id)
    except DependencyUnavailable as error:
        with uow:
            uow.batches.set_state(
                batch.id,
                BatchStatus.FAILED,
                error=f"enqueue_failed: {error.message}",
                finished_at="now",
            )
            uow.commit()
        raise EnqueueFailed(
            "the batch could not be handed to the planner and will not be sent; "
            "it is marked failed, send it again",
            details=[{"batch_id": str(batch.id)}],
        ) from error


def start_batch(
    uow: UnitOfWork,
    planner: PlannerQueue,
    files: RecipientFiles,
    *,
    client_id: uuid.UUID,
    batch_id: uuid.UUID,
    now: datetime | None = None,
    lookahead_seconds: int = 90,
) -> Batch:
    """Freeze the uploaded file and ask for planning; a second start is 409.

    The row is held while the file is checked and copied, so two starts at
    once queue up and the second finds the batch started. A batch whose
    ``scheduled_at`` is still ahead (issue 18) is frozen and checked now and
    waits as ``scheduled``; the scheduler hands it to the planner at its time.
    """
    now = now or datetime.now(UTC)
    with uow:
        batch = _owned(uow, client_id, batch_id, for_update=True)
        if batch.source != "upload":
            raise BatchConflict("this batch's recipients were given inline: it started when posted")
        if batch.status is not BatchStatus.AWAITING_UPLOAD:
            raise BatchConflict(f"the batch has started already (it is {batch.status.value})")
        size = files.size(upload_key(client_id, batch_id))
        if not size:
            raise UploadMissing(
                "nothing was uploaded for this batch yet (or an empty file): PUT the "
                "recipients file to its upload URL, then start it"
            )
        if size > MAX_UPLOAD_BYTES:
            raise UploadTooLarge(
                f"the recipients file is {size} bytes; at most {MAX_UPLOAD_BYTES} are read",
                details=[{"field": "upload", "message": "too large", "bytes": size}],
            )
        files.freeze(upload_key(client_id, batch_id), frozen_key(batch_id))
        if batch.upload_format is UploadFormat.CSV:
            # A CSV that names no email column cannot be planned at all: say so now.
            csv_columns(_first_line(files, frozen_key(batch_id)))
        if batch.scheduled_at is not None and batch.scheduled_at > now:
            uow.batches.set_state(batch_id, BatchStatus.SCHEDULED)
            uow.commit()
            batch.status = BatchStatus.SCHEDULED
        else:
            uow.batches.set_state(batch_id, BatchStatus.ACCEPTED, started_at="now")
            uow.commit()
    if batch.status is BatchStatus.SCHEDULED:
        release_batch_if_near(uow, planner, batch, now=now, lookahead_seconds=lookahead_seconds)
        return get_batch(uow, client_id=client_id, batch_id=batch_id)
    try:
        planner.request_planning(batch_id, batch.trace_id)
    except DependencyUnavailable:
        # Not started after all: the client's next start call tries again.
        with uow:
            uow.batches.set_state(batch_id, BatchStatus.AWAITING_UPLOAD, started_at=None)
            uow.commit()
        raise
    return get_batch(uow, client_id=client_id, batch_id=batch_id)


def _first_line(files: RecipientFiles, key: str) -> bytes:
    for line, _ in split_lines(files.read(key, 0, MAX_LINE_BYTES)):
        return line
    return b""


# --- the planner ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanResult:
    done: bool
    planned: int = 0
    enqueued: int = 0
    # Not done because a scheduled batch is not due yet: ask again after this long.
    wait_seconds: int = 0


def plan_batch(
    uow: UnitOfWork,
    queue: MessageQueue,
    files: RecipientFiles,
    *,
    batch_id: uuid.UUID,
    chunk_size: int,
    keep_going: Callable[[], bool] = lambda: True,
    now: datetime | None = None,
    quota: QuotaCounter | None = None,
) -> PlanResult:
    """Plan the batch from its cursor until done or ``keep_going`` says stop.

    First the messages a killed run wrote but may not have enqueued are
    enqueued (index past the batch's ``enqueued_through``); then chunk after
    chunk is written and enqueued. Not done: the caller asks for another run.
    A scheduled batch (issue 18) starts here when its time has come; a
    record that arrives before it asks to be run again at its time, unless
    the batch was moved since and not released again (the record is stale:
    dropped); a cancelled batch plans nothing.

    ``quota`` (a live batch): an upload's chunk is counted against the
    client's quota before it is written, all of its addressable recipients
    or none; a chunk that does not fit ends the batch ``failed`` with the
    refusal as its error (the messages planned before it are sent). After
    each chunk the recipients that got no message (suppressed, duplicate;
    for an inline batch, charged when accepted, also bad addresses) are
    given back, as a single send refused for them is not counted.
    """
    now = now or datetime.now(UTC)
    with uow:
        batch = uow.batches.get(batch_id, for_update=True)
        if batch is None:
            return PlanResult(done=True)
        if batch.status is BatchStatus.SCHEDULED:
            due = batch.scheduled_at or now
            if (due - now).total_seconds() > _EARLY_SECONDS:
                if batch.released_at is None:
                    # Moved to a later time since this record was sent (a
                    # reschedule unreleases it): the scheduler releases it
                    # for its new time, so this stale record is dropped.
                    return PlanResult(done=True)
                return PlanResult(done=False, wait_seconds=queue_delay_seconds(due, now))
            uow.batches.set_state(batch_id, BatchStatus.PLANNING, started_at="now")
            batch.status = BatchStatus.PLANNING
        if batch.status is BatchStatus.ACCEPTED:
            uow.batches.set_state(batch_id, BatchStatus.PLANNING)
            batch.status = BatchStatus.PLANNING
        uow.commit()
    enqueued = _enqueue_written(uow, queue, batch)
    if batch.status is not BatchStatus.PLANNING:
        return PlanResult(done=True, enqueued=enqueued)
    try:
        records = _records_from_cursor(uow, files, batch)
    except NoEmailColumn as error:
        with uow:
            uow.batches.set_state(
                batch_id, BatchStatus.FAILED, error=error.message, finished_at="now", plan_done=True
            )
            uow.commit()
        return PlanResult(done=True)
    client = _charged_client(uow, batch) if quota is not None else None
    planned = 0
    # The next chunk is read and checked on a thread of its own while this
    # one is in PostgreSQL: the address checks and the database then share
    # the machine's cores instead of taking turns (issue 17). At most three
    # chunks are held: one written, one ready, one being read.
    with read_ahead(_prepared(records, chunk_size, batch.is_test)) as chunks:
        for chunk in chunks:
            charge = None
            if quota is not None and client is not None:
                charge = BatchQuotaCharge(quota, lambda: uow, client)
            try:
                written = _write_charged_chunk(uow, batch, chunk, charge)
            except QuotaExceeded as refusal:
                _stop_for_quota(uow, batch, refusal)
                return PlanResult(done=True, planned=planned, enqueued=enqueued)
            if written is None:
                # Cancelled, or another planner run is ahead of this one.
                return PlanResult(done=True, planned=planned, enqueued=enqueued)
            planned += chunk.count
            _enqueue_all(queue, written.entries)
            enqueued += len(written.entries)
            with uow:
                uow.batches.mark_enqueued_through(batch_id, chunk.last.index)
                uow.commit()
            if not keep_going():
                return PlanResult(done=False, planned=planned, enqueued=enqueued)
    with uow:
        uow.batches.finish_planning(batch_id)
        uow.commit()
    return PlanResult(done=True, planned=planned, enqueued=enqueued)


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """A chunk of records with its addresses checked, ready to be written."""

    first_index: int
    last: RecipientRecord
    count: int
    recipients: StagedRecipients
    issues: list[Issue]


def _prepared(
    records: Iterator[RecipientRecord], chunk_size: int, is_test: bool
) -> Iterator[PreparedChunk]:
    for chunk in _chunks(records, chunk_size):
        planned: list[PlannedRecipient] = []
        issues: list[Issue] = []
        for record in chunk:
            checked = check_address(record)
            if (
                isinstance(checked, PlannedRecipient)
                and not is_test
                and SANDBOX_DOMAIN in checked.bare
            ):
                checked = f"not a valid email address: {SPECIAL_USE_REFUSAL}"
            if isinstance(checked, str):
                issues.append(
                    Issue(record.index, record.line, record.address, IssueStatus.REJECTED, checked)
                )
            else:
                planned.append(checked)
        yield PreparedChunk(chunk[0].index, chunk[-1], len(chunk), stage(planned), issues)


def _charged_client(uow: UnitOfWork, batch: Batch) -> Client | None:
    """The client whose quota the batch's recipients count against; None: not counted."""
    if batch.is_test:
        return None  # test mode is never charged (issue 15)
    with uow:
        return uow.clients.get(batch.client_id)


@dataclass(frozen=True, slots=True)
class WrittenChunk:
    """A chunk's messages as written, and their queue records."""

    message_ids: list[uuid.UUID]
    entries: list[QueueEntry]


def _write_charged_chunk(
    uow: UnitOfWork, batch: Batch, chunk: PreparedChunk, charge: BatchQuotaCharge | None
) -> WrittenChunk | None:
    """Write the chunk; with ``charge``, count what it adds to the client's quota.

    An upload's addressable recipients are counted before the write
    (QuotaExceeded: nothing written); an inline batch's were counted when it
    was accepted. Afterwards those that got no message are given back.
    """
    if charge is None:
        return _write_chunk(uow, batch, chunk)
    upload = batch.source == "upload"
    if upload:
        charge.take_all(chunk.recipients.count)
    with charge:  # an exception gives back what this chunk counted
        written = _write_chunk(uow, batch, chunk)
    if written is None:
        charge.give_back(charge.counted)
        return None
    if upload:
        charge.give_back(chunk.recipients.count - len(written.message_ids))
    else:
        charge.give_back_earlier(chunk.count - len(written.message_ids))
    return written


def _stop_for_quota(uow: UnitOfWork, batch: Batch, refusal: QuotaExceeded) -> None:
    with uow:
        uow.batches.set_state(
            batch.id,
            BatchStatus.FAILED,
            error=f"{refusal.code}: {refusal.message}; the recipients after those planned "
            "were not sent",
            finished_at="now",
            plan_done=True,
        )
        uow.commit()


def _write_chunk(uow: UnitOfWork, batch: Batch, chunk: PreparedChunk) -> WrittenChunk | None:
    last = chunk.last
    with uow:
        current = uow.batches.get(batch.id, for_update=True)
        if (
            current is None
            or current.status is not BatchStatus.PLANNING
            or current.plan_records != chunk.first_index
        ):
            return None
        # Issue 20: the batch's queue now (the client's default one if it
        # names none, or its queue was deleted since), locked until the
        # commit: a paused queue's messages are written held, and a resume
        # waits for them, so its release finds them.
        target = uow.queues.share_locked(batch.client_id, _queue_id_of(batch))
        held = target.state is QueueState.PAUSED
        written = uow.batches.plan_chunk(
            batch,
            chunk.recipients,
            chunk.issues,
            plan_records=last.index + 1,
            plan_offset=last.end_offset,
            plan_line=last.line or 0,
            status=MessageStatus.HELD.value if held else MessageStatus.QUEUED.value,
            queue_id=None if target.name == DEFAULT_QUEUE_NAME else target.id,
        )
        uow.commit()
    entries = [
        QueueEntry(message_id, batch.trace_id, band=target.band, group_id=str(batch.client_id))
        for message_id in ([] if held else written)
    ]
    return WrittenChunk(written, entries)


def _queue_id_of(batch: Batch) -> uuid.UUID | None:
    """The named queue the batch was accepted for; None: the client's default one."""
    named = batch.content.get("resolved_queue_id")
    return None if named is None else uuid.UUID(named)


def _enqueue_written(uow: UnitOfWork, queue: MessageQueue, batch: Batch) -> int:
    """Enqueue what an earlier run wrote past ``enqueued_through`` (at least once)."""
    after, total = batch.enqueued_through, 0
    while True:
        with uow:
            page = uow.batches.unenqueued(batch.id, after, _ENQUEUE_PAGE)
            entries = queues.queue_entries(uow, [message_id for message_id, _ in page])
        if not page:
            return total
        _enqueue_all(queue, entries)
        total += len(page)
        after = page[-1][1]
        with uow:
            uow.batches.mark_enqueued_through(batch.id, after)
            uow.commit()


def _records_from_cursor(
    uow: UnitOfWork, files: RecipientFiles, batch: Batch
) -> Iterator[RecipientRecord]:
    if batch.source == "inline":
        with uow:
            recipients = uow.batches.inline_recipients(batch.id)
        return inline_records(recipients, start=batch.plan_records)
    key = frozen_key(batch.id)
    lines = split_lines(files.read(key, batch.plan_offset), start_offset=batch.plan_offset)
    if batch.upload_format is UploadFormat.CSV:
        if batch.plan_offset == 0:
            header, _ = next(lines, (b"", 0))
            first_line = 2
        else:
            header, first_line = _first_line(files, key), batch.plan_line + 1
        return csv_records(
            csv_columns(header), lines, first_index=batch.plan_records, first_line=first_line
        )
    return ndjson_records(lines, first_index=batch.plan_records, first_line=batch.plan_line + 1)


def _chunks(records: Iterator[RecipientRecord], size: int) -> Iterator[list[RecipientRecord]]:
    while chunk := list(itertools.islice(records, size)):
        yield chunk


# --- reading, cancelling, retrying ---------------------------------------------


def _owned(
    uow: UnitOfWork, client_id: uuid.UUID, batch_id: uuid.UUID, *, for_update: bool = False
) -> Batch:
    batch = uow.batches.get_for_client(client_id, batch_id, for_update=for_update)
    if batch is None:
        raise BatchNotFound("no such batch for this client", details=[{"batch_id": str(batch_id)}])
    return batch


def get_batch(uow: UnitOfWork, *, client_id: uuid.UUID, batch_id: uuid.UUID) -> Batch:
    with uow:
        return _owned(uow, client_id, batch_id)


def rate_per_minute(batch: Batch, now: datetime | None = None) -> float:
    """Messages handed to a provider per minute since the batch started."""
    if batch.started_at is None:
        return 0.0
    end = batch.finished_at or now or datetime.now(UTC)
    minutes = max((end - batch.started_at).total_seconds() / 60, 1 / 60)
    return round(batch.handed_over / minutes, 1)


def recipient_outcomes(
    uow: UnitOfWork,
    *,
    client_id: uuid.UUID,
    batch_id: uuid.UUID,
    statuses: list[str] | None,
    after: int,
    limit: int,
) -> list[RecipientOutcome]:
    with uow:
        _owned(uow, client_id, batch_id)
        return uow.batches.outcomes(batch_id, statuses, after, limit)


def cancel_batch(
    uow: UnitOfWork,
    *,
    client_id: uuid.UUID,
    batch_id: uuid.UUID,
    quota: BatchQuotaCharge | None = None,
) -> Batch:
    """Stop every message of the batch not yet claimed by a worker; 409 once it is over.

    The batch row reads cancelled in the same transaction that marks its
    queued messages cancelled; a worker's claim re-checks the batch, so no
    message is claimed after this commits. Messages a worker claimed before
    are in flight and finish (they are counted as they end).

    ``quota``: an inline batch's recipients were counted when it was
    accepted; those the planner had not reached get no message and are
    given back (the planned ones, cancelled or not, count as single sends do).
    """
    with uow:
        batch = _owned(uow, client_id, batch_id, for_update=True)
        if batch.status.is_over:
            raise BatchConflict(f"the batch is {batch.status.value}: nothing is left to cancel")
        uow.batches.set_state(
            batch_id, BatchStatus.CANCELLED, cancelled_at="now", finished_at="now"
        )
        uow.batches.cancel_unsent(batch_id)
        uow.commit()
    if quota is not None and batch.source == "inline" and not batch.is_test:
        quota.give_back_earlier((batch.total or 0) - batch.plan_records)
    return get_batch(uow, client_id=client_id, batch_id=batch_id)


def retry_failed(
    uow: UnitOfWork, queue: MessageQueue, *, client_id: uuid.UUID, batch_id: uuid.UUID
) -> int:
    """Send again the batch's messages that failed transiently; how many.

    Transient: the worker's retries ran out (a provider outage) or the
    queue refused the message. A permanent refusal (the provider said the
    address or content will never be accepted) is not retried, nor is a
    rejected, suppressed or duplicate recipient.
    """
    with uow:
        batch = _owned(uow, client_id, batch_id, for_update=True)
        if batch.status in (BatchStatus.CANCELLED, BatchStatus.FAILED):
            raise BatchConflict(f"the batch is {batch.status.value}: nothing is retried")
        if batch.status is BatchStatus.SCHEDULED:
            raise BatchConflict("the batch is scheduled: nothing has been sent yet")
        if not batch.plan_done:
            raise BatchConflict("the batch is still being planned: retry once it is sending")
        ids = uow.batches.retryable(batch_id)
        if not ids:
            return 0
        if batch.status is BatchStatus.FINISHED:
            uow.batches.set_state(batch_id, BatchStatus.SENDING, finished_at=None)
        uow.batches.requeue(batch_id, ids)
        # Issue 20: each on its queue's band, in the client's fair-queue group.
        entries = queues.queue_entries(uow, ids)
        uow.commit()
    # A failure here leaves them queued: the reconciler enqueues queued rows.
    _enqueue_all(queue, entries)
    return len(ids)


def _enqueue_all(queue: MessageQueue, entries: Sequence[QueueEntry]) -> None:
    """SendMessageBatch for a chunk; any id refused fails the chunk (the planner resumes it)."""
    refused = queue.enqueue_many(entries)
    if refused:
        raise DependencyUnavailable(
            f"the send queue refused {len(refused)} of {len(entries)} messages"
        )
