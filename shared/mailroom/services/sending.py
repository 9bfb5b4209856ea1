"""Accepting a send request: validate, write the row, queue the id."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mailroom.adapters import tracing
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.inline_content import InlineContentStore
from mailroom.adapters.queue import MessageQueue, QueueEntry
from mailroom.adapters.templates import (
    TemplateRenderer,
    TemplateStore,
    missing_props,
    subject_too_long,
)
from mailroom.domain.addresses import SANDBOX_DOMAIN, SPECIAL_USE_REFUSAL
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import (
    BulkNeedsOneRecipient,
    DependencyUnavailable,
    EnqueueFailed,
    InvalidRequest,
    MailroomError,
    MessageNotFound,
    MessageNotRetryable,
    QuotaExceeded,
    RecipientsSuppressed,
    UnknownQueue,
    UnknownSmtpConfig,
)
from mailroom.domain.mime import subject_fits
from mailroom.domain.model import Client, EventType, Message, MessageStatus, SendOptions
from mailroom.domain.outgoing_headers import validate_caller_headers
from mailroom.domain.personalization import InlineContent, lint_content
from mailroom.domain.queues import DEFAULT_QUEUE_NAME, Band
from mailroom.domain.sandbox import sandbox_fields, simulated_suppressions
from mailroom.domain.scheduling import normalise_send_time, queue_delay_seconds
from mailroom.domain.templates import TemplateSource
from mailroom.domain.tenancy import KeyKind
from mailroom.domain.tracking import layered
from mailroom.services import idempotency, queues, suppression
from mailroom.services.quotas import BatchQuotaCharge
from mailroom.services.templates import check_props

if TYPE_CHECKING:
    from mailroom.services.sending_domains import VerifiedSenders

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SendLimits:
    max_recipients: int
    default_from: str
    # Issue 18: a scheduled message due within this many seconds is put on
    # the queue at once, held back by SQS until its time (the scheduler's
    # next pass could be up to a minute away).
    schedule_lookahead_seconds: int = 90


@dataclass(frozen=True, slots=True)
class Timing:
    """When a send goes out (issue 18): its normalised time, and whether that is later."""

    scheduled_at: datetime | None
    # The time asked for had passed already: the message is sent now.
    in_past: bool = False

    @classmethod
    def of(cls, requested: datetime | None, now: datetime) -> Timing:
        if requested is None:
            return cls(None)
        moment = normalise_send_time(requested, now=now, field_name="scheduled_at")
        return cls(moment, in_past=moment <= now)

    @property
    def deferred(self) -> bool:
        return self.scheduled_at is not None and not self.in_past


@dataclass(frozen=True, slots=True)
class RunLink:
    """The recurring schedule and run a message comes from (issue 18)."""

    schedule_id: uuid.UUID
    run_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PreparedSend:
    """One valid send request, as it will be written: what ``prepare_send`` makes of it."""

    message: Message
    # The inline content the message names (issue 17), to be kept before the row.
    content: InlineContent | None = None
    # Inline content with ``"strict": false``: the props it renders empty.
    render_warnings: tuple[str, ...] = ()
    # Inline content: the template lint's warnings (``code: message``).
    lint_warnings: tuple[str, ...] = ()
    # Issue 18: when it goes out (``scheduled``, or now), the time the
    # request was read, the schedule run it comes from, and the look-ahead
    # within which a scheduled message is queued at once (SQS-delayed).
    timing: Timing = Timing(None)
    now: datetime | None = None
    run: RunLink | None = None
    lookahead_seconds: int = 90
    # Issue 20: the queue the request names; None: the client's default queue.
    queue_name: str | None = None


# Fields issue 17 added, with the values that mean "not used": left out of a
# request's fingerprint, so an Idempotency-Key held before the upgrade still
# matches its retry after it.
_NEW_FIELD_DEFAULTS: dict[str, object] = {
    # Issue 17: inline content.
    "html": None,
    "text": None,
    "strict": True,
    "idempotency_key": None,
    # Issue 16: caller headers, tags, bulk mail.
    "headers": {},
    "tags": [],
    "bulk": False,
    "campaign": None,
    "unsubscribe_url": None,
    # Issue 18: send later.
    "scheduled_at": None,
    # Issue 20: a client's own SMTP relay.
    "smtp_config": None,
    # Issue 21: open and click tracking.
    "tracking": None,
    # Issue 20: the queue.
    "queue": None,
}


def request_fingerprint(request: SendRequest) -> str:
    """The Idempotency-Key fingerprint of one send request (canonical JSON, SHA-256)."""
    dump = request.model_dump(mode="json", by_alias=True)
    for name, unused in _NEW_FIELD_DEFAULTS.items():
        if name in dump and dump[name] == unused:
            del dump[name]
    return idempotency.fingerprint(dump)


def prepare_send(
    templates: TemplateStore,
    renderer: TemplateRenderer,
    limits: SendLimits,
    *,
    client: Client,
    request: SendRequest,
    trace_id: str,
    mode: KeyKind = KeyKind.LIVE,
    check_sender: Callable[[str], None] | None = None,
    now: datetime | None = None,
    run: RunLink | None = None,
    resolve_relay: Callable[[str], uuid.UUID] | None = None,
) -> PreparedSend:
    """Validate one send request and build its message; nothing is written.

    Every refusal of one request is raised here, before anything is stored:
    the single send, each item of a batch and (issue 17's bulk batches) each
    recipient go through this one function.

    A template is trial-rendered (UnknownTemplate, InvalidProps, MissingProp
    or another RenderError, all 422). Inline content is trial-rendered too:
    one render lists every prop it prints without a value or default; with
    ``strict`` (the default) that is 422 missing_prop naming them all, else
    they render empty and come back as ``render_warnings``. The worker
    renders the email itself, from the stored content: see docs/architecture.md.

    With ``request.scheduled_at`` in the future (issue 18) the message is
    ``scheduled``: the scheduler enqueues it when due (a naive time or one
    over 30 days ahead is 422; a past one sends now and says so).
    """
    now = now or datetime.now(UTC)
    timing = Timing.of(request.scheduled_at, now)
    test = mode is KeyKind.TEST
    if not test:
        refuse_sandbox_addresses(request)
    if request.recipient_count > limits.max_recipients:
        raise InvalidRequest(
            f"at most {limits.max_recipients} recipients (to, cc and bcc together)",
            details=[{"field": "to", "message": "too many recipients"}],
        )
    if request.bulk:
        _refuse_bulk_to_several(request)
    content = request.inline_content
    warnings: list[str] = []
    if check_sender is not None and request.from_:
        # SENDER_VERIFICATION (issue 16): 422 sender_not_verified unless the
        # From domain is one of the client's verified sending domains.
        check_sender(request.from_)
    relay_id = relay_of(request.smtp_config, resolve_relay)
    if content is None:
        assert request.template is not None  # SendRequest: a template or inline content
        if request.subject and not subject_fits(request.subject):
            raise subject_too_long(request.subject)
        # The template is the one this client may use: another client's of
        # that name is not found (issue 15).
        with tracing.span("api.validate"):
            source = templates.get(request.template, request.template_version, client_id=client.id)
            check_props(renderer, source, request.props)
        bulk = bulk_of(
            source,
            requested=request.bulk,
            explicit="bulk" in request.model_fields_set,
            one_recipient=len(request.to) == 1 and not request.cc and not request.bcc,
        )
        template_name, subject = request.template, request.subject
        template_tracking = source.tracking
        # The uploaded version the trial render checked, and whose it is: the
        # worker renders exactly that, whatever is uploaded in between.
        version, shared = source.version, source.shared
    else:
        with tracing.span("api.validate"):
            warnings = renderer.check_inline(content.source, request.props)
        if warnings and request.strict:
            raise missing_props(content.template_name, warnings)
        # The subject is part of the content, rendered by the worker.
        template_name, subject, version, shared = content.template_name, None, None, None
        bulk = request.bulk
        template_tracking = None
    message = Message(
        id=uuid.uuid4(),
        client_id=client.id,
        trace_id=trace_id,
        template_name=template_name,
        template_version=version,
        template_shared=shared,
        from_address=request.from_ or limits.default_from,
        to=list(request.to),
        cc=list(request.cc),
        bcc=list(request.bcc),
        reply_to=list(request.reply_to),
        subject=subject,
        props=request.props,
        metadata=dict(request.metadata),
        is_test=test,
        options=SendOptions(
            headers=validate_caller_headers(request.headers),
            tags=tuple(request.tags),
            bulk=bulk,
            campaign=request.campaign,
            unsubscribe_url=request.unsubscribe_url,
            smtp_config_id=relay_id,
            # The template's default under the send's own choice (issue 21);
            # the queue's goes under both when the message is placed.
            tracking=layered(
                template_tracking, None if request.tracking is None else request.tracking.as_pairs()
            ),
        ),
        status=MessageStatus.SCHEDULED if timing.deferred else MessageStatus.QUEUED,
        scheduled_at=timing.scheduled_at,
        schedule_id=run.schedule_id if run else None,
        schedule_run_id=run.run_id if run else None,
    )
    lint = lint_content(content) if content is not None else ()
    return PreparedSend(
        message,
        content,
        tuple(warnings),
        lint,
        timing=timing,
        now=now,
        run=run,
        lookahead_seconds=limits.schedule_lookahead_seconds,
        queue_name=request.queue,
    )


def _refuse_bulk_to_several(request: SendRequest) -> None:
    if len(request.to) != 1 or request.cc or request.bcc:
        raise _bulk_to_several()


def _bulk_to_several(template: str | None = None) -> BulkNeedsOneRecipient:
    # The one-click link unsubscribes whoever the message was for: one person.
    why = f"template '{template}' is bulk mail, so " if template else ""
    return BulkNeedsOneRecipient(
        f"{why}a bulk message has exactly one recipient (to), and no cc or bcc",
        details=[{"field": "bulk", "message": "one recipient only"}],
    )


def bulk_of(
    source: TemplateSource, *, requested: bool, explicit: bool, one_recipient: bool
) -> bool:
    """Whether a send of ``source`` is bulk mail: the send says so, or its template does.

    A template marked bulk (``meta.json`` of a file template, ``bulk`` of an
    upload) is marketing mail whoever sends it: its one-click unsubscribe is
    what Gmail and Yahoo require of bulk senders, so a send cannot turn it
    off. An explicit ``"bulk": false`` naming such a template is refused (422
    ``validation_error`` on ``bulk``) rather than silently overridden, and it
    needs one recipient as an explicit ``"bulk": true`` does.
    """
    if not source.bulk:
        return requested
    if explicit and not requested:
        raise InvalidRequest(
            f"template '{source.name}' is bulk mail: its sends always carry one-click "
            'unsubscribe, and "bulk": false cannot turn that off (leave bulk out)',
            details=[{"field": "bulk", "message": "the template is bulk"}],
        )
    if not one_recipient:
        raise _bulk_to_several(source.name)
    return True


def relay_of(
    smtp_config: str | None, resolve_relay: Callable[[str], uuid.UUID] | None
) -> str | None:
    """The id of the relay a request names (issue 20), or None when it names none.

    422 unknown_smtp_config unless the client has it, active; also where no
    resolver is given (the caller cannot send through relays).
    """
    if smtp_config is None:
        return None
    if resolve_relay is None:
        raise UnknownSmtpConfig(
            "SMTP configurations cannot be named here",
            details=[{"field": "smtp_config", "message": "not available"}],
        )
    return str(resolve_relay(smtp_config))


def check_send(
    templates: TemplateStore,
    renderer: TemplateRenderer,
    limits: SendLimits,
    *,
    client: Client,
    request: SendRequest,
    mode: KeyKind = KeyKind.LIVE,
    resolve_relay: Callable[[str], uuid.UUID] | None = None,
    check_queue: Callable[[str | None], None] | None = None,
    check_sender: Callable[[str], None] | None = None,
) -> None:
    """Everything /v1/send checks before it writes, and nothing written.

    A schedule's payload goes through this at creation (issue 18), so it is
    refused then rather than failing at 3 a.m. ``resolve_relay`` and
    ``check_queue`` (issue 20, ``queues.queue_checker``) are /v1/send's
    relay and queue checks: 422 unknown_smtp_config, 422 unknown_queue, 409
    queue_draining. Without them a payload naming a relay or a queue is
    refused as ``prepare_send`` and ``accept_prepared`` refuse it where
    neither is available.
    """
    prepare_send(
        templates,
        renderer,
        limits,
        client=client,
        request=request,
        trace_id="check",
        mode=mode,
        resolve_relay=resolve_relay,
        check_sender=check_sender,
    )
    if check_queue is not None:
        check_queue(request.queue)
    elif request.queue not in (None, DEFAULT_QUEUE_NAME):
        raise _queues_unavailable()


def sender_check(
    senders: VerifiedSenders | None, uow: UnitOfWork, client: Client
) -> Callable[[str], None] | None:
    """``prepare_send``'s From check for ``client``, when SENDER_VERIFICATION asks for one."""
    if senders is None:
        return None

    def check(from_address: str) -> None:
        senders.require(uow, client.id, from_address)

    return check


def accept_message(
    uow: UnitOfWork,
    queue: MessageQueue,
    templates: TemplateStore,
    limits: SendLimits,
    *,
    client: Client,
    request: SendRequest,
    trace_id: str,
    renderer: TemplateRenderer,
    reserve_quota: Callable[[], None] | None = None,
    on_accepted: Callable[[UnitOfWork, Message], None] | None = None,
    mode: KeyKind = KeyKind.LIVE,
    contents: InlineContentStore | None = None,
    senders: VerifiedSenders | None = None,
    now: datetime | None = None,
    run: RunLink | None = None,
    resolve_relay: Callable[[str], uuid.UUID] | None = None,
    routing: bool = False,
) -> Message:
    """``accept_prepared`` of ``prepare_send``: validate, store as ``queued``, enqueue.

    ``resolve_relay`` and ``routing`` are ``prepare_send``'s and
    ``accept_prepared``'s: a schedule's run (issue 18) passes both, as
    /v1/send does, so its payload's ``smtp_config`` and ``queue`` apply.
    """
    prepared = prepare_send(
        templates,
        renderer,
        limits,
        client=client,
        request=request,
        trace_id=trace_id,
        mode=mode,
        check_sender=sender_check(senders, uow, client),
        now=now,
        run=run,
        resolve_relay=resolve_relay,
    )
    return accept_prepared(
        uow,
        queue,
        prepared,
        client=client,
        reserve_quota=reserve_quota,
        on_accepted=on_accepted,
        contents=contents,
        routing=routing,
    )


def accept_prepared(
    uow: UnitOfWork,
    queue: MessageQueue,
    prepared: PreparedSend,
    *,
    client: Client,
    reserve_quota: Callable[[], None] | None = None,
    on_accepted: Callable[[UnitOfWork, Message], None] | None = None,
    contents: InlineContentStore | None = None,
    routing: bool = False,
) -> Message:
    """Store the message as ``queued`` and put it on the send queue.

    ``reserve_quota`` runs once the request is known to be valid, just before
    the row is written; it raises (QuotaExceeded) to refuse the message.
    ``on_accepted`` runs inside the transaction that writes the row (the
    Idempotency-Key is completed there, so key and row commit together).

    The row is committed before the queue is told, so the worker always finds
    it. If the queue then refuses, the row is marked ``failed`` with the reason
    and the caller gets 503: never a row that claims to be queued but is not.
    A crash between the two leaves a ``queued`` row with no queue message; the
    reconciler of the reliability issue re-enqueues those.

    In test mode (issue 15) the row is flagged and the worker hands it to
    the sandbox provider; addresses at sim.mailroom.invalid are accepted
    (a live caller gets the 422 any special-use domain gets), and
    ``suppressed@`` ones are screened as if on the suppression list. The
    caller passes no ``reserve_quota`` for test sends: they are not charged.

    ``senders`` (issue 16), when given, refuses a ``from`` whose domain is
    not a verified sending domain of the client (422 sender_not_verified),
    before anything is written.

    ``routing`` (issue 20, services/queues.py): the message goes through the
    queue it names or the client's default one, onto that queue's priority
    band; a paused queue keeps it as ``held`` (not enqueued until resume),
    a draining or unknown one refuses it before anything is written.
    """
    message = prepared.message
    test = message.is_test
    _keep_contents(contents, [prepared])
    trace_id = message.trace_id
    timing, run = prepared.timing, prepared.run
    detail: dict[str, object] = {"trace_id": trace_id}
    if timing.scheduled_at is not None:
        detail["scheduled_at"] = timing.scheduled_at.isoformat()
        if timing.in_past:
            detail["scheduled_in_past"] = True
    if run is not None:
        detail.update(schedule_id=str(run.schedule_id), schedule_run_id=str(run.run_id))
    placement: queues.Placement | None = None
    if not routing and prepared.queue_name not in (None, DEFAULT_QUEUE_NAME):
        raise _queues_unavailable()
    with uow:
        if routing:
            placement = queues.place(uow, client.id, prepared.queue_name)
            queues.apply_placement(message, placement)
        # QuotaExceeded here leaves nothing written. Should every recipient
        # turn out suppressed, RecipientsSuppressed is raised below and the
        # caller's QuotaCharge gives the charge back.
        if reserve_quota is not None:
            reserve_quota()
        # One statement checks the recipients against suppressions and, if
        # none is suppressed (the common case), writes the row, its event and
        # its recipients (issue 8: the check was a round trip of its own).
        simulated = simulated_suppressions(message.envelope_recipients, client.id) if test else []
        if simulated:
            # Test mode's suppressed@: screened as a real entry would be, with
            # the client's real (and test) entries beside it.
            rows = suppression.recipient_rows(message)
            active = [
                *uow.suppressions.active_for(
                    client.id,
                    sorted({address for address, _ in rows}),
                    datetime.now(UTC),
                    include_test=True,
                ),
                *simulated,
            ]
        else:
            with tracing.span("api.insert"):
                active = uow.add_accepted_unless_suppressed(
                    message, detail, suppression.recipient_rows(message)
                )
        screening = suppression.screening_of(active, message.to, message.cc, message.bcc)
        message.to, message.cc, message.bcc = screening.to, screening.cc, screening.bcc
        if active and not screening.refused:
            # Some recipients were dropped: the rest are written, with why.
            uow.add_accepted(message, detail, suppression.recipient_rows(message))
            suppression.record_dropped(uow, message, screening)
        if not screening.refused:
            if timing.deferred:
                uow.messages.append_event(
                    message.id,
                    EventType.SCHEDULED,
                    {
                        "scheduled_at": timing.scheduled_at.isoformat()
                        if timing.scheduled_at
                        else None
                    },
                )
            if placement is not None and placement.queue.name != DEFAULT_QUEUE_NAME:
                uow.queues.assign(message.id, placement.queue.id)
            if on_accepted is not None:
                on_accepted(uow, message)
            uow.commit()
    if screening.refused:
        suppression.refuse(uow, message, screening)  # raises RecipientsSuppressed
    if message.status is MessageStatus.HELD:
        return message  # the queue is paused: its resume enqueues the message

    if timing.deferred:
        release_if_near(
            uow,
            queue,
            message,
            now=prepared.now or datetime.now(UTC),
            lookahead_seconds=prepared.lookahead_seconds,
            band=Band.NORMAL if placement is None else placement.band,
        )
        return message

    try:
        if placement is None:
            queue.enqueue(message.id, trace_id)
        else:
            queue.enqueue_in(placement.band, message.id, trace_id, group_id=str(client.id))
    except DependencyUnavailable as error:
        _mark_enqueue_failed(uow, [message], error.message)
        raise EnqueueFailed(
            "the message could not be queued and was not sent; it is marked failed, try again",
            details=[{"message_id": str(message.id)}],
        ) from error
    return message


def _queues_unavailable() -> UnknownQueue:
    # Without routing (the tests' in-memory units of work) there are no queues.
    return UnknownQueue(
        "queues are not available here", details=[{"field": "queue", "message": "unknown"}]
    )


def release_if_near(
    uow: UnitOfWork,
    queue: MessageQueue,
    message: Message,
    *,
    now: datetime,
    lookahead_seconds: int,
    band: Band,
) -> bool:
    """Enqueue a scheduled message due within the look-ahead, delayed until its time.

    ``band``: its queue's (no default: every caller says which, issue 20).

    Best effort: should the queue refuse, the row stays unreleased and the
    scheduler's next pass enqueues it. Should two enqueue it, the worker's
    claim sends it once.
    """
    due = message.scheduled_at
    if due is None or (due - now).total_seconds() > lookahead_seconds:
        return False
    entry = QueueEntry(
        message.id,
        message.trace_id,
        queue_delay_seconds(due, now),
        band,
        group_id=str(message.client_id),
    )
    try:
        if queue.enqueue_many([entry]):
            return False
        with uow:
            uow.scheduled.mark_enqueued([message.id], now)
            uow.commit()
    except Exception:
        log.exception("releasing scheduled message %s failed; the scheduler will", message.id)
        return False
    return True


def _keep_contents(contents: InlineContentStore | None, prepared: Sequence[PreparedSend]) -> None:
    """Inline contents are written before the rows naming them: the worker always finds them.

    Content-addressed and never changed, so one written for a send that is
    then refused is harmless (the next send of it finds it there).
    """
    distinct = {p.content.content_hash: p.content for p in prepared if p.content is not None}
    if not distinct:
        return
    if contents is None:
        raise InvalidRequest("inline content is not available here: name a template")
    for content in distinct.values():
        contents.save(content)


def _mark_enqueue_failed(uow: UnitOfWork, messages: Sequence[Message], reason: str) -> None:
    with uow:
        for message in messages:
            message.status = MessageStatus.FAILED
            message.last_error = f"enqueue_failed: {reason}"
            uow.messages.save_outcome(message)
            uow.messages.append_event(message.id, EventType.ENQUEUE_FAILED, {"error": reason})
        uow.commit()


@dataclass(frozen=True, slots=True)
class ItemRefusal:
    """One batch item that was not accepted, and why."""

    index: int
    error: MailroomError


@dataclass(frozen=True, slots=True)
class BatchAcceptance:
    """What became of a batch's valid items: accepted (and queued), or refused."""

    accepted: list[tuple[int, Message]]
    refused: list[ItemRefusal]


def accept_batch(
    uow: UnitOfWork,
    queue: MessageQueue,
    items: Sequence[tuple[int, PreparedSend]],
    *,
    client: Client,
    charge: BatchQuotaCharge | None,
    all_or_nothing: bool,
    on_accepted: Callable[[UnitOfWork, list[tuple[int, Message]], list[ItemRefusal]], None]
    | None = None,
    contents: InlineContentStore | None = None,
    lookahead_seconds: int = 90,
    routing: bool = False,
) -> BatchAcceptance:
    """Write the batch's prepared items in one transaction, then enqueue them in tens.

    Quota and suppression apply per item. With ``all_or_nothing`` (strict
    validation) an item refused by either refuses the whole batch (its error
    names every such index) and nothing is written; otherwise the item is
    refused alone: a quota refusal writes nothing for it, a suppressed one is
    written ``failed`` as a single send's is. ``charge`` counts the items
    against the quota in one step (None: test mode, not charged); what is not
    written is given back.

    One query screens every recipient of the batch and one statement writes
    the accepted rows with their events and recipients. The queue is told
    after the commit (SendMessageBatch, ten a call); a message it refuses is
    marked failed and reported as refused with enqueue_failed.
    """
    _keep_contents(contents, [prepared for _, prepared in items])
    refused: list[ItemRefusal] = []
    accepted: list[tuple[int, Message]] = []
    placements: dict[uuid.UUID, queues.Placement] = {}
    if not routing and any(p.queue_name not in (None, DEFAULT_QUEUE_NAME) for _, p in items):
        raise _queues_unavailable()
    with ExitStack() as charges, uow:
        if routing:
            # Issue 20: each named queue looked up once; an unknown or
            # draining one refuses the batch before anything is written.
            by_name: dict[str | None, queues.Placement] = {}
            for index, prepared in items:
                name = prepared.queue_name
                if name not in by_name:
                    try:
                        by_name[name] = queues.place(uow, client.id, name)
                    except MailroomError as error:
                        error.details = [{"index": index, **d} for d in error.details]
                        raise
                placements[prepared.message.id] = by_name[name]
                queues.apply_placement(prepared.message, by_name[name])
        taken = list(items)
        if charge is not None:
            # One step per period for the whole batch: the quota runs out at an index.
            charges.enter_context(charge)
            counted, refusal = charge.take_up_to(len(items))
            if refusal is not None:
                if all_or_nothing:
                    raise _batch_refusal(refusal, items[counted][0])
                refused.extend(ItemRefusal(index, refusal) for index, _ in items[counted:])
                taken = taken[:counted]
        screened = _screen_batch(uow, client, [prepared.message for _, prepared in taken])
        to_write: list[tuple[int, Message, suppression.Screening]] = []
        for (index, prepared), screening in zip(taken, screened, strict=True):
            message = prepared.message
            if screening.refused:
                if all_or_nothing:
                    indexes = [i for (i, _), s in zip(taken, screened, strict=True) if s.refused]
                    raise RecipientsSuppressed(
                        "every recipient of these items is on the suppression list; "
                        "nothing was written",
                        details=[{"index": i, "code": "suppressed"} for i in indexes],
                    )
                if charge is not None:
                    charge.give_back(1)
                message.to, message.cc, message.bcc = (list(p) for p in screening.requested)
                message.status = MessageStatus.FAILED
                message.last_error = suppression.SUPPRESSED_ERROR
                uow.messages.add(message)
                suppression.record_recipients(uow, message, screening)
                refused.append(
                    ItemRefusal(
                        index,
                        RecipientsSuppressed(
                            "every recipient of this message is on the suppression list",
                            details=[{"message_id": str(message.id)}],
                        ),
                    )
                )
                continue
            message.to, message.cc, message.bcc = screening.to, screening.cc, screening.bcc
            to_write.append((index, message, screening))
        uow.add_accepted_many(
            [
                (message, {"trace_id": message.trace_id}, suppression.recipient_rows(message))
                for _, message, _ in to_write
            ]
        )
        for _, message, screening in to_write:
            if screening.dropped:
                suppression.record_dropped(uow, message, screening)
            if message.status is MessageStatus.SCHEDULED and message.scheduled_at is not None:
                # Issue 18: an item with scheduled_at waits for the scheduler.
                uow.messages.append_event(
                    message.id,
                    EventType.SCHEDULED,
                    {"scheduled_at": message.scheduled_at.isoformat()},
                )
        accepted = [(index, message) for index, message, _ in to_write]
        _assign_queues(uow, [message for _, message in accepted], placements)
        if on_accepted is not None:
            on_accepted(uow, accepted, refused)
        uow.commit()
        # Written: the charges stand.
        charges.pop_all()

    now = datetime.now(UTC)
    for _, message in accepted:
        if message.status is MessageStatus.SCHEDULED:
            # Issue 18: released by the scheduler (or now, SQS-delayed, if due soon).
            placement = placements.get(message.id)
            release_if_near(
                uow,
                queue,
                message,
                now=now,
                lookahead_seconds=lookahead_seconds,
                band=Band.NORMAL if placement is None else placement.band,
            )
    refused_ids = _enqueue_accepted(
        queue,
        [m for _, m in accepted if m.status is not MessageStatus.SCHEDULED],
        placements,
    )
    if refused_ids:
        failed = [(index, m) for index, m in accepted if m.id in refused_ids]
        _mark_enqueue_failed(uow, [m for _, m in failed], "the send queue refused the message")
        refused.extend(
            ItemRefusal(
                index,
                EnqueueFailed(
                    "the message could not be queued and was not sent; it is marked failed",
                    details=[{"message_id": str(m.id)}],
                ),
            )
            for index, m in failed
        )
        accepted = [(index, m) for index, m in accepted if m.id not in refused_ids]
    return BatchAcceptance(accepted, sorted(refused, key=lambda r: r.index))


def _assign_queues(
    uow: UnitOfWork, messages: Sequence[Message], placements: dict[uuid.UUID, queues.Placement]
) -> None:
    """Write the named (not default) queues of a batch's accepted messages, one statement each."""
    by_queue: dict[uuid.UUID, list[uuid.UUID]] = {}
    for message in messages:
        placement = placements.get(message.id)
        if placement is not None and placement.queue.name != DEFAULT_QUEUE_NAME:
            by_queue.setdefault(placement.queue.id, []).append(message.id)
    for queue_id, message_ids in by_queue.items():
        uow.queues.assign_many(message_ids, queue_id)


def _enqueue_accepted(
    queue: MessageQueue, messages: Sequence[Message], placements: dict[uuid.UUID, queues.Placement]
) -> set[uuid.UUID]:
    """Enqueue a batch's accepted messages on their bands (held ones wait); the ids refused."""
    if not placements:
        return queue.enqueue_many([QueueEntry(m.id, m.trace_id) for m in messages])
    by_band: dict[Band, list[tuple[uuid.UUID, str]]] = {}
    for message in messages:
        if message.status is MessageStatus.HELD:
            continue
        by_band.setdefault(placements[message.id].band, []).append((message.id, message.trace_id))
    refused: set[uuid.UUID] = set()
    for band in (Band.HIGH, Band.NORMAL, Band.LOW):
        if band in by_band:
            refused.update(
                queue.enqueue_many_in(band, by_band[band], group_id=str(messages[0].client_id))
            )
    return refused


def _batch_refusal(error: QuotaExceeded, index: int) -> QuotaExceeded:
    """A strict batch's quota refusal, saying at which item the quota ran out."""
    return type(error)(
        f"item {index}: {error.message}; nothing was written",
        retry_after_seconds=error.retry_after_seconds,
        details=[{"index": index, **detail} for detail in error.details],
    )


def _screen_batch(
    uow: UnitOfWork, client: Client, messages: Sequence[Message]
) -> list[suppression.Screening]:
    """Every message's screening, from one query over all the batch's recipients."""
    addresses = sorted(
        {address for message in messages for address, _ in suppression.recipient_rows(message)}
    )
    if not addresses:
        return []
    test = any(message.is_test for message in messages)
    active = uow.suppressions.active_for(client.id, addresses, datetime.now(UTC), include_test=test)
    screenings = []
    for message in messages:
        simulated = (
            simulated_suppressions(message.envelope_recipients, client.id)
            if message.is_test
            else []
        )
        screenings.append(
            suppression.screening_of([*active, *simulated], message.to, message.cc, message.bcc)
        )
    return screenings


def retry_message(
    uow: UnitOfWork,
    queue: MessageQueue,
    *,
    client_id: uuid.UUID,
    message_id: str,
    routing: bool = False,
) -> Message:
    """Send a ``failed`` message again: a new attempt on the same message (issue 17).

    The row goes back to ``queued`` with a ``retried`` event saying what it
    failed with, then onto the queue; the worker renders and screens it as
    any queued message. 404 for an id that is not the client's (another
    client's message is not found), 409 message_not_retryable in any other
    state. If the queue refuses, the row reads failed again and the caller
    gets 503. Not charged to the quota: the message was counted when accepted.

    ``routing`` (issue 20): it goes on its queue's band (the client's default
    queue's when it has none), in its client's fair-queue group, as it did
    when accepted.
    """
    try:
        wanted = uuid.UUID(message_id)
    except ValueError:
        raise MessageNotFound(f"no message {message_id!r}") from None
    with uow:
        before = uow.messages.get_for_client(client_id, wanted)
        if before is None:
            raise MessageNotFound(f"no message {message_id!r}")
        message = uow.messages.requeue_failed(client_id, wanted)
        if message is None:
            raise MessageNotRetryable(
                f"message {message_id} is {before.status.value}: only a failed message "
                "can be retried",
                details=[{"status": before.status.value}],
            )
        uow.messages.append_event(
            message.id,
            EventType.RETRIED,
            {"previous_error": before.last_error, "attempts": before.attempts},
        )
        entries = queues.queue_entries(uow, [message.id]) if routing else []
        uow.commit()
    try:
        if entries:
            entry = entries[0]
            queue.enqueue_in(entry.band, message.id, message.trace_id, group_id=entry.group_id)
        else:
            queue.enqueue(message.id, message.trace_id)
    except DependencyUnavailable as error:
        _mark_enqueue_failed(uow, [message], error.message)
        raise EnqueueFailed(
            "the message could not be queued again; it still reads failed, try again",
            details=[{"message_id": str(message.id)}],
        ) from error
    return message


def refuse_sandbox_addresses(request: SendRequest) -> None:
    """A live caller's sim.mailroom.invalid address: the 422 of any special-use domain."""
    # The validator wrote the domain in lower case: one substring test per
    # address is all a live send pays (issue 15 keeps its cost flat).
    values = (request.from_ or "", *request.to, *request.cc, *request.bcc, *request.reply_to)
    if not any(SANDBOX_DOMAIN in value for value in values):
        return
    fields = [
        *((("from", request.from_),) if request.from_ else ()),
        *((f"to.{i}", value) for i, value in enumerate(request.to)),
        *((f"cc.{i}", value) for i, value in enumerate(request.cc)),
        *((f"bcc.{i}", value) for i, value in enumerate(request.bcc)),
        *((f"reply_to.{i}", value) for i, value in enumerate(request.reply_to)),
    ]
    refused = sandbox_fields(fields)
    if not refused:
        return
    reason = f"address is not a valid email address: {SPECIAL_USE_REFUSAL}"
    raise InvalidRequest(
        f"{refused[0][0]}: {reason}",
        details=[
            {"field": field, "type": "validation_error", "message": reason} for field, _ in refused
        ],
    )
