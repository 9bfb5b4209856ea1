"""Sending one queued message: render, build MIME, hand to the provider, record."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from mailroom.adapters import tracing
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.operator_signals import SignalKey
from mailroom.adapters.providers.base import FailureKind
from mailroom.adapters.providers.client_relays import Relay
from mailroom.adapters.templates import (
    TemplateRenderer,
    TemplateSource,
    TemplateStore,
    subject_too_long,
)
from mailroom.domain.errors import InvalidTemplate, RenderError, UnknownTemplate
from mailroom.domain.feedback import DeliveryEvent, Suppression
from mailroom.domain.mime import build_mime, from_domain, subject_fits
from mailroom.domain.model import EventType, Message, MessageStatus, RenderedEmail
from mailroom.domain.outgoing_headers import SenderPolicy
from mailroom.domain.queues import Band, RetrySchedule, retry_delay
from mailroom.domain.retry import Backoff
from mailroom.domain.throttling import ThrottleDecision
from mailroom.services import domain_throttling, feedback, suppression
from mailroom.services.provider_chain import ChainResult, ProviderChain

if TYPE_CHECKING:
    from mailroom.services.queues import ClaimGate

log = logging.getLogger(__name__)
DEFAULT_BACKOFF = Backoff()
# Above the worker's Lambda timeout (120 s in template.yaml): a live worker
# never outlives its own claim, so a takeover only ever follows a dead one.
DEFAULT_LEASE_SECONDS = 150
# Writing a batch's outcomes is retried for about this long (a database
# restart); every second of it widens the window in docs/architecture.md.
RECORD_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
# One event to write: its type and detail.
EventRecord = tuple[EventType, dict[str, object]]
# Rewrites a rendered message before its MIME is built (issue 21: tracking).
HtmlRewriter = Callable[[Message, RenderedEmail], RenderedEmail]


class DeliveryResult(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    RETRY = "retry"  # still queued; the queue must deliver it again later
    ALREADY_DONE = "already_done"  # a duplicate delivery of a finished message
    # A duplicate delivery while another worker's claim is live: acknowledged,
    # the claimer records the outcome (or its lease runs out and the
    # reconciler hands the message on).
    IN_PROGRESS = "in_progress"
    MISSING = "missing"
    # Issue 18: still scheduled (not due yet, moved, or not released by the
    # scheduler): acknowledged, the scheduler enqueues it again at its time.
    # A cancelled one is ALREADY_DONE. Either way nothing is sent: the claim
    # is the re-check of the status, under the row's lock.
    NOT_DUE = "not_due"
    # Issue 20, decided before the claim and never an attempt: the queue is
    # paused (the row reads held; the record is acknowledged), or a send
    # rate or in-flight cap says later (the record goes back with a delay).
    HELD = "held"
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    message_id: uuid.UUID
    result: DeliveryResult
    error: str | None = None
    trace_id: str | None = None
    # RETRY: how long the queue should hold the record back (the backoff).
    retry_after_seconds: int | None = None
    # FAILED because retries ran out: the record belongs on the DLQ.
    dead_letter: bool = False
    # DEFERRED: the priority band the record goes back on.
    band: Band | None = None


@dataclass(frozen=True, slots=True)
class SendItem:
    """One message of a batch, and whether the queue would hand it over again."""

    message_id: uuid.UUID
    # SQS will not deliver this record again (it is at the queue's
    # maxReceiveCount): a retry is impossible, the message fails instead.
    last_receive: bool = False


@dataclass(slots=True)
class _Pending:
    """A claimed message's outcome, held until the batch writes them all."""

    message: Message
    outcome: DeliveryOutcome
    events: list[EventRecord] = field(default_factory=list)
    # Feedback known at send time, applied once the send is recorded: the
    # sandbox's simulated events, and bounces at SMTP RCPT time (issue 16).
    feedback: tuple[DeliveryEvent, ...] = ()


def deliver_message(
    uow: UnitOfWork,
    templates: TemplateStore,
    renderer: TemplateRenderer,
    providers: ProviderChain,
    *,
    message_id: uuid.UUID,
    max_attempts: int,
    backoff: Backoff = DEFAULT_BACKOFF,
    last_receive: bool = False,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    sender_policy: SenderPolicy | None = None,
    rewrite: HtmlRewriter | None = None,
) -> DeliveryOutcome:
    """``deliver_batch`` for one message."""
    (outcome,) = deliver_batch(
        uow,
        templates,
        renderer,
        providers,
        items=[SendItem(message_id, last_receive)],
        max_attempts=max_attempts,
        backoff=backoff,
        lease_seconds=lease_seconds,
        sender_policy=sender_policy,
        rewrite=rewrite,
    )
    return outcome


def deliver_batch(
    uow: UnitOfWork,
    templates: TemplateStore,
    renderer: TemplateRenderer,
    providers: ProviderChain,
    *,
    items: Sequence[SendItem],
    max_attempts: int,
    backoff: Backoff = DEFAULT_BACKOFF,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    sender_policy: SenderPolicy | None = None,
    rewrite: HtmlRewriter | None = None,
    gate: ClaimGate | None = None,
) -> list[DeliveryOutcome]:
    """Claim the batch's messages, send those claimed, record every outcome.

    A few statements to PostgreSQL whatever the batch size: one UPDATE claims
    every message that is queued (or whose claim's lease ran out) and brings
    back the clients' provider orders and the suppressions matching the
    recipients, one SELECT explains the rest (sent already, claimed by a live
    worker, missing) if any, and one statement writes all outcomes and their
    events.
    Outcomes come back in the order of ``items``; an id listed twice is
    reported IN_PROGRESS the second time (the first occurrence carries the
    outcome).
    """
    token = uuid.uuid4()
    ids = list(dict.fromkeys(item.message_id for item in items))
    results: dict[uuid.UUID, DeliveryOutcome] = {}
    to_claim = ids
    schedules: dict[uuid.UUID, RetrySchedule] = {}
    queue_orders: dict[uuid.UUID, list[str]] = {}
    gate_queues: list[tuple[uuid.UUID, uuid.UUID]] = []
    if gate is not None:
        # Issue 20: paused queues, send rates and in-flight caps, before the claim.
        admission = gate.admit(uow, ids)
        to_claim = admission.claimable
        schedules = admission.schedules
        queue_orders = admission.orders
        gate_queues = admission.queues
        for message_id in admission.held:
            results[message_id] = DeliveryOutcome(message_id, DeliveryResult.HELD, "queue paused")
        for message_id, (seconds, band) in admission.deferred.items():
            results[message_id] = DeliveryOutcome(
                message_id,
                DeliveryResult.DEFERRED,
                "send rate or in-flight limit",
                retry_after_seconds=seconds,
                band=band,
            )
    with tracing.span("worker.claim", messages=len(to_claim)), uow:
        # One statement claims, and brings back each client's provider order
        # and the suppressions matching the recipients (issue 8). Where the
        # latter are unknown they are read in the claim's transaction.
        claim = uow.messages.claim_for_send(to_claim, token, lease_seconds, gate_queues)
        taken, known_orders, active = claim.messages, claim.orders, claim.suppressions
        if active is None:
            active = _active_suppressions(uow, taken)
        uow.commit()
    claimed = {message.id: message for message in taken}
    unclaimed = [message_id for message_id in to_claim if message_id not in claimed]
    found: dict[uuid.UUID, Message] = {}
    if unclaimed:
        with uow:
            found = uow.messages.get_many(unclaimed)
            left_queued = [m for m in unclaimed if _is_queued(found.get(m))]
            if gate is not None and left_queued:
                # Issue 20: queued yet not taken: their queue was paused
                # between the gate's read and the claim. Held now, as the
                # gate would have, so none stays queued without a record.
                for message_id in uow.queues.hold_paused(left_queued):
                    found[message_id].status = MessageStatus.HELD
                uow.commit()

    last_receive = {item.message_id for item in items if item.last_receive}
    batch_templates = BatchTemplates(templates)
    # Issue 8: one suppression query and one client read per client for the
    # whole batch, instead of both per message.
    suppressed, orders = _batch_lookups(uow, list(claimed.values()), known_orders, active)
    # Issue 20: each message's relay, and whether its recipient domains'
    # rates let it go now (one Redis round trip for the batch).
    try:
        routes = _routes(providers, list(claimed.values()))
    except Exception:
        log.exception("routing the batch failed; routing each message alone")
        routes = {}
    pending: list[_Pending] = []
    for message_id in to_claim:
        message = claimed.get(message_id)
        if message is None:
            results[message_id] = _not_claimed(message_id, found.get(message_id))
            continue
        try:
            attempt = _attempt(
                uow,
                batch_templates,
                renderer,
                providers,
                message,
                # Issue 20: the queue's own retry schedule, where it has one.
                max_attempts=_max_attempts(schedules.get(message_id), max_attempts),
                backoff=_backoff(schedules.get(message_id), backoff),
                last_receive=message_id in last_receive,
                suppressed=None if suppressed is None else message_id in suppressed,
                # Issue 20: the queue's own provider order, else the client's.
                client_order=queue_orders.get(message_id)
                or orders.get(message.client_id, _UNKNOWN_ORDER),
                sender_policy=sender_policy,
                route=routes.get(message_id),
                rewrite=rewrite,
            )
        except Exception as error:  # noqa: BLE001 - one message's bug must not cost the batch
            # Raising here would leave the batch's messages already sent
            # unrecorded (and sent again later): this one is retried instead.
            attempt = _retry_later(message, f"internal: {error!r}", backoff)
        pending.append(attempt)
        results[message_id] = attempt.outcome

    with tracing.span("worker.record"):
        written = _record(uow, token, pending)
    simulated = [e for p in pending if p.feedback and p.message.id in written for e in p.feedback]
    if simulated:
        _apply_simulated_feedback(uow, simulated)
    for attempt in pending:
        if attempt.message.id not in written:
            # Another worker took the claim over: only possible if this one
            # ran past its lease. Its outcome stands; this record is acknowledged.
            results[attempt.message.id] = DeliveryOutcome(
                attempt.message.id,
                DeliveryResult.IN_PROGRESS,
                "claim lost before the outcome was written",
                trace_id=attempt.message.trace_id,
            )

    outcomes: list[DeliveryOutcome] = []
    reported: set[uuid.UUID] = set()
    for item in items:
        if item.message_id in reported:
            outcomes.append(
                DeliveryOutcome(item.message_id, DeliveryResult.IN_PROGRESS, "duplicate in batch")
            )
            continue
        reported.add(item.message_id)
        outcomes.append(results[item.message_id])
    return outcomes


def _max_attempts(schedule: RetrySchedule | None, default: int) -> int:
    if schedule is None or schedule.max_retries is None:
        return default
    return schedule.max_retries + 1


def _backoff(schedule: RetrySchedule | None, default: Backoff) -> Backoff:
    if schedule is None or not schedule.delays:
        return default
    return ScheduledBackoff(delays=schedule.delays, jitter=default.jitter)


@dataclass(frozen=True)
class ScheduledBackoff(Backoff):
    """A queue's ``retry_delays``: the n-th failed attempt waits the n-th (the last repeats)."""

    delays: tuple[int, ...] = ()

    def delay_seconds(self, failed_attempts: int, draw: float = 0.0) -> int:
        raw = retry_delay(self.delays, max(failed_attempts, 1))
        return round(raw * (1 - self.jitter * min(max(draw, 0.0), 1.0)))


class BatchTemplates:
    """One batch's view of a template store: each template read once per batch.

    A file template's get is five stat calls, an uploaded one's a query, and
    the messages of a batch mostly share a template (issue 8). An edit or a
    new upload is what the next batch uses; a message pinned at acceptance
    (issue 15: the version and whose it is) renders exactly that.
    """

    def __init__(self, store: TemplateStore) -> None:
        self._store = store
        # A pinned upload by (name, version, owner); a name resolved for a
        # client by (name, version, client); file templates by name alone,
        # as they are every client's.
        self._pinned: dict[tuple[str, int, uuid.UUID | None], TemplateSource] = {}
        self._resolved: dict[tuple[str, int | None, uuid.UUID], TemplateSource] = {}
        self._files: dict[str, TemplateSource] = {}

    def for_message(self, message: Message) -> TemplateSource:
        """What ``message`` renders: the upload pinned at acceptance, else its name resolved."""
        name, version = message.template_name, message.template_version
        if version is not None and message.template_shared is not None:
            owner = None if message.template_shared else message.client_id
            source = self._pinned.get((name, version, owner))
            if source is None:
                source = self._store.get_exact(name, version, owner=owner)
                self._pinned[(name, version, owner)] = source
            return source
        # A file template, or a row accepted before owners were pinned.
        if version is None:
            source = self._files.get(name)
            if source is not None:
                return source
        key = (name, version, message.client_id)
        source = self._resolved.get(key)
        if source is None:
            source = self._store.get(name, version, client_id=message.client_id)
            self._resolved[key] = source
            if source.version is None:
                self._files[name] = source
        return source


def _is_queued(message: Message | None) -> bool:
    return message is not None and message.status is MessageStatus.QUEUED


def _not_claimed(message_id: uuid.UUID, message: Message | None) -> DeliveryOutcome:
    if message is None:
        return DeliveryOutcome(message_id, DeliveryResult.MISSING, "no such message")
    if message.status.is_final_for_sending:
        return DeliveryOutcome(message_id, DeliveryResult.ALREADY_DONE, trace_id=message.trace_id)
    if message.status is MessageStatus.SCHEDULED:
        return DeliveryOutcome(
            message_id, DeliveryResult.NOT_DUE, "scheduled, not due", trace_id=message.trace_id
        )
    if message.status is MessageStatus.HELD:
        # Issue 20: a record of a release that did not commit (its page is
        # released again), or one older than a pause: the row waits in
        # PostgreSQL for its queue's release.
        return DeliveryOutcome(
            message_id, DeliveryResult.HELD, "held in its paused queue", trace_id=message.trace_id
        )
    # Queued rows are always claimable, so this one was sending under a live lease.
    return DeliveryOutcome(
        message_id,
        DeliveryResult.IN_PROGRESS,
        "claimed by another worker",
        trace_id=message.trace_id,
    )


def _record(uow: UnitOfWork, token: uuid.UUID, pending: Sequence[_Pending]) -> set[uuid.UUID]:
    """Write every outcome of the batch in one transaction, retried through a database blip.

    Should it still fail, the claims stay until their leases run out; the
    queue's redelivery or the reconciler then tries those messages again.
    """
    if not pending:
        return set()
    for delay in (*RECORD_RETRY_DELAYS, None):
        try:
            with uow:
                # One statement: the outcomes still claimed by ``token``, and
                # the events of exactly those.
                written = uow.messages.record_outcomes_with_events(
                    token,
                    [p.message for p in pending],
                    [
                        (p.message.id, event_type, dict(detail))
                        for p in pending
                        for event_type, detail in p.events
                    ],
                )
                uow.commit()
            return written
        except DBAPIError:
            if delay is None:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


def _apply_simulated_feedback(uow: UnitOfWork, events: Sequence[DeliveryEvent]) -> None:
    """Test mode: the sandbox's feedback, through the path every provider webhook takes.

    After the outcomes are written, so each message is settled (``sent``) and
    the events apply at once rather than wait as orphans. A failure here
    costs the simulated feedback only: the sends are recorded already.
    """
    try:
        feedback.record_delivery_events(uow, events)
    except Exception:  # the batch's outcomes stand
        log.exception("applying the sandbox's simulated feedback failed")


# No batch lookup answered for this client: _attempt reads the client itself.
_UNKNOWN_ORDER = object()


def _active_suppressions(uow: UnitOfWork, messages: list[Message]) -> list[Suppression] | None:
    """The batch's suppressions, read in the claim's transaction; None if that failed.

    A database error is raised: it aborted the claim's transaction, whose
    COMMIT would then roll back without an error, and the messages would be
    sent unclaimed. Raised, the claim rolls back and the batch is redelivered
    with nothing sent. Any other error leaves the transaction alone.
    """
    try:
        return suppression.active_for_batch(uow, messages)
    except DBAPIError:
        raise
    except Exception:  # noqa: BLE001 - _batch_lookups reads them again
        return None


def _batch_lookups(
    uow: UnitOfWork,
    messages: list[Message],
    known_orders: dict[uuid.UUID, list[str] | None] | None = None,
    active: list[Suppression] | None = None,
) -> tuple[set[uuid.UUID] | None, dict[uuid.UUID, list[str] | None]]:
    """The batch's suppressed message ids and each client's provider order.

    A failure here is not the batch's: each message then looks both up
    itself (None / an empty dict), as it did before these were batched.
    """
    suppressed: set[uuid.UUID] | None
    try:
        suppressed = suppression.screen_batch_before_send(uow, messages, active=active)
    except Exception:  # noqa: BLE001 - the per-message path reports it
        suppressed = None
    orders: dict[uuid.UUID, list[str] | None] = dict(known_orders or {})
    missing = [
        client_id
        for client_id in dict.fromkeys(message.client_id for message in messages)
        if client_id not in orders
    ]
    if not missing:
        # PostgreSQL's claim answered every order: no transaction here.
        return suppressed, orders
    try:
        with uow:
            for client_id in missing:
                client = uow.clients.get(client_id)
                orders[client_id] = client.provider_order if client else None
    except Exception:  # noqa: BLE001 - the per-message path reports it
        orders = dict(known_orders or {})
    return suppressed, orders


def _attempt(
    uow: UnitOfWork,
    templates: BatchTemplates,
    renderer: TemplateRenderer,
    providers: ProviderChain,
    message: Message,
    *,
    max_attempts: int,
    backoff: Backoff,
    last_receive: bool,
    suppressed: bool | None = None,
    client_order: object = _UNKNOWN_ORDER,
    sender_policy: SenderPolicy | None = None,
    route: _Route | None = None,
    rewrite: HtmlRewriter | None = None,
) -> _Pending:
    """Render and send one claimed message; its outcome is written with the batch's.

    ``suppressed`` and ``client_order`` come from the batch's lookups; None
    (suppressed) or ``_UNKNOWN_ORDER`` mean "look it up for this message".
    """
    # A bounce or complaint may have suppressed a recipient since the message
    # was accepted: drop those (recorded per recipient), fail if none is left.
    if suppressed is None:
        suppressed = not suppression.screen_before_send(uow, message)
    if suppressed:
        return _failed(message, suppression.SUPPRESSED_ERROR, attempted=False)

    # Issue 20: the client's own relay, and the recipient domains' rates:
    # over its rate the message is put back, not rendered, sent or counted.
    relay, decision = route if route is not None else _routes(providers, [message])[message.id]
    if not decision.allowed:
        return _throttled(message, decision.retry_after_seconds, decision.reason)
    throttle = None if message.is_test else providers.throttle

    try:
        source = templates.for_message(message)
        with tracing.span("worker.render"):
            rendered = renderer.render(source, message.props)
    except (RenderError, UnknownTemplate, InvalidTemplate) as error:
        # Rendering is deterministic: another try would fail the same way. A
        # render_timeout fails this message only; the batch goes on.
        return _failed(message, f"{error.code}: {error.message}", attempted=False)
    if message.subject:
        if not subject_fits(message.subject):
            # The send API refuses these; a row written before it did fails here.
            refusal = subject_too_long(message.subject)
            return _failed(message, f"{refusal.code}: {refusal.message}", attempted=False)
        rendered = type(rendered)(subject=message.subject, html=rendered.html, text=rendered.text)
    if rewrite is not None:
        # Issue 21: tracked links and pixel (services/tracking.py). Raising
        # retries the message, as any unexpected error of one message does.
        rendered = rewrite(message, rendered)
    # The "sign" stage: the MIME message is built here (DKIM signs it in the
    # SMTP and Mailgun providers, adapters/providers/dkim_signing.py).
    with tracing.span("worker.sign"):
        if sender_policy is None:
            email = build_mime(message, rendered)
        else:
            # Issue 16: the VERP return path, caller and list headers, Feedback-ID.
            domain = from_domain(message)
            email = build_mime(
                message,
                rendered,
                sender_policy.headers(message, domain),
                sender_policy.return_path(message, domain),
            )
    message.subject = rendered.subject

    if message.is_test:
        # Test mode (issue 15): the sandbox, whatever the chain and its breakers say.
        result = providers.send_sandboxed(email)
    else:
        if client_order is _UNKNOWN_ORDER:
            with uow:
                client = uow.clients.get(message.client_id)
            client_order = client.provider_order if client else None
        result = providers.send(
            email,
            client_order=client_order if isinstance(client_order, list) else None,
            message_id=str(message.id),
            # Issue 20: the client's own relay, first, behind its own breaker.
            relay=relay,
        )
        if throttle is not None:
            for group, rate in domain_throttling.observe(throttle, message, relay, result):
                log.info("%s asked to slow down: its rate is now %.1f/min", group.value, rate)
    # One attempt is one pass through the chain, however many providers it
    # tried (each failed try is its own event below).
    message.attempts += 1
    tries = _provider_events(result, message.attempts)
    if result.receipt is not None:
        return _sent(message, result, tries)

    reason = result.summary
    last = result.failures[-1] if result.failures else None
    if result.permanent_failure is not None:
        failed = _failed(
            message,
            reason,
            attempted=True,
            provider=result.permanent_failure.provider,
            events=tries,
        )
        # A 5xx at RCPT for every recipient: each is a bounce (issue 16).
        failed.feedback = result.permanent_failure.feedback
        return failed
    if message.attempts >= max_attempts or last_receive:
        return _failed(
            message,
            reason,
            attempted=True,
            provider=last.provider if last else None,
            events=tries,
            retries_exhausted=True,
        )
    # Transient, deferred and configuration failures are retried: a provider
    # outage, a greylisting relay or a credential being rotated should not
    # fail the customer's mail.
    delay = backoff.delay_seconds(message.attempts, random.random())  # noqa: S311 - jitter
    message.status = MessageStatus.QUEUED
    message.last_error = reason
    message.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
    detail: dict[str, object] = {
        "attempt": message.attempts,
        "error": reason,
        "retry_in_seconds": delay,
    }
    if last is not None:
        detail.update(provider=last.provider, kind=last.kind.value)
    if result.skipped:
        detail["skipped"] = list(result.skipped)
    return _Pending(
        message,
        DeliveryOutcome(
            message.id,
            DeliveryResult.RETRY,
            reason,
            trace_id=message.trace_id,
            retry_after_seconds=delay,
        ),
        [*tries, (EventType.ATTEMPT_FAILED, detail)],
    )


# A message's relay (None: the chain) and whether its domains' rates admit it now.
_Route = tuple[Relay | None, ThrottleDecision]
_ADMITTED = ThrottleDecision(True)


def _routes(providers: ProviderChain, messages: Sequence[Message]) -> dict[uuid.UUID, _Route]:
    """Each message's route; test messages go to the sandbox, neither relayed nor throttled."""
    routes: dict[uuid.UUID, _Route] = {}
    live: list[tuple[Message, Relay | None]] = []
    for message in messages:
        if message.is_test:
            routes[message.id] = (None, _ADMITTED)
        else:
            relay = providers.relay_for(message.client_id, message.options.smtp_config_id)
            live.append((message, relay))
    throttle = providers.throttle
    if throttle is None or not live:
        decisions = [_ADMITTED] * len(live)
    else:
        decisions = domain_throttling.admit_batch(throttle, live)
    for (message, relay), decision in zip(live, decisions, strict=True):
        routes[message.id] = (relay, decision)
    return routes


def _throttled(message: Message, delay: int, reason: str) -> _Pending:
    """Over its recipient domain's rate: back on the queue for ``delay``, no attempt counted."""
    message.status = MessageStatus.QUEUED
    message.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
    detail: dict[str, object] = {"reason": reason, "retry_in_seconds": delay}
    return _Pending(
        message,
        DeliveryOutcome(
            message.id,
            DeliveryResult.RETRY,
            f"throttled: {reason}",
            trace_id=message.trace_id,
            retry_after_seconds=delay,
        ),
        [(EventType.THROTTLED, detail)],
    )


def _retry_later(message: Message, reason: str, backoff: Backoff) -> _Pending:
    delay = backoff.delay_seconds(max(message.attempts, 1), random.random())  # noqa: S311
    message.status = MessageStatus.QUEUED
    message.last_error = reason
    message.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
    detail: dict[str, object] = {"attempt": message.attempts, "error": reason}
    detail["retry_in_seconds"] = delay
    return _Pending(
        message,
        DeliveryOutcome(
            message.id,
            DeliveryResult.RETRY,
            reason,
            trace_id=message.trace_id,
            retry_after_seconds=delay,
        ),
        [(EventType.ATTEMPT_FAILED, detail)],
    )


def _sent(message: Message, result: ChainResult, tries: Sequence[EventRecord]) -> _Pending:
    assert result.receipt is not None
    receipt = result.receipt
    message.status = MessageStatus.SENT
    message.provider = receipt.provider
    message.provider_msg_id = receipt.provider_msg_id
    message.sent_at = datetime.now(UTC)
    message.last_error = None
    message.next_attempt_at = None
    detail: dict[str, object] = {
        "provider": receipt.provider,
        "provider_msg_id": receipt.provider_msg_id,
        "attempt": message.attempts,
    }
    if message.scheduled_at is not None:
        # Issue 18: how late the send was against the time asked for (a time
        # already past at acceptance counts from the acceptance).
        due = max(message.scheduled_at, message.created_at or message.scheduled_at)
        detail["fired_late_ms"] = round((message.sent_at - due).total_seconds() * 1000)
    if result.failures:
        detail["failed_over_from"] = [failure.provider for failure in result.failures]
    if result.skipped:
        detail["skipped"] = list(result.skipped)
    return _Pending(
        message,
        DeliveryOutcome(message.id, DeliveryResult.SENT, trace_id=message.trace_id),
        [*tries, (EventType.SENT, detail)],
        receipt.feedback,
    )


def _provider_events(result: ChainResult, attempt: int) -> list[EventRecord]:
    """One event per provider that was tried and failed, with its error."""
    events: list[EventRecord] = []
    for failure in result.failures:
        detail: dict[str, object] = {
            "provider": failure.provider,
            "kind": failure.kind.value,
            "error": failure.message,
            "attempt": attempt,
        }
        if failure.kind is FailureKind.CONFIG:
            # The operator-visible alarm's row: the log line and metric carry
            # the same key (services/provider_chain.py raises them).
            detail["alarm"] = SignalKey.PROVIDER_CONFIG_ERROR.value
            events.append((EventType.PROVIDER_MISCONFIGURED, detail))
        else:
            events.append((EventType.PROVIDER_FAILED, detail))
    return events


def _failed(
    message: Message,
    reason: str,
    *,
    attempted: bool,
    provider: str | None = None,
    events: Sequence[EventRecord] = (),
    retries_exhausted: bool = False,
) -> _Pending:
    message.status = MessageStatus.FAILED
    message.last_error = reason
    message.next_attempt_at = None
    detail: dict[str, object] = {"error": reason, "attempts": message.attempts}
    if provider:
        detail["provider"] = provider
    if retries_exhausted:
        detail["retries_exhausted"] = True
    return _Pending(
        message,
        DeliveryOutcome(
            message.id,
            DeliveryResult.FAILED,
            reason,
            trace_id=message.trace_id,
            dead_letter=retries_exhausted,
        ),
        [*events, (EventType.FAILED, detail)],
    )
