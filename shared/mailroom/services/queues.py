"""Per-client queues (issue 20): managing them, routing a send, and the claim gate.

Routing (``place``) runs inside the send's transaction: the named queue (422
unknown_queue), or the client's default one made on first use; a draining
queue refuses (409 queue_draining), a paused one takes the message as
``held``. The claim gate (``ClaimGate``) runs in the worker before a batch is
claimed: a paused queue's messages become ``held`` (kept in PostgreSQL, their
SQS records acknowledged), and the queue's and client's per-minute send
limits and the client's in-flight cap decide how many of the rest are
claimed now; the others go back on SQS with a delay from the bucket. None of
that counts as an attempt and nothing sleeps.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from mailroom.adapters.claim_limits import ClaimRateLimiter, SendBucket
from mailroom.adapters.db.queues import ClaimView, QueueStats
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.queue import MAX_DELAY_SECONDS, MessageQueue, QueueEntry
from mailroom.domain.errors import (
    DependencyUnavailable,
    InvalidRequest,
    QueueDraining,
    QueueNotEmpty,
    QueueNotFound,
    UnknownQueue,
    UnknownSmtpConfig,
)
from mailroom.domain.model import Message, MessageStatus, SendOptions
from mailroom.domain.queues import (
    DEFAULT_QUEUE_NAME,
    Band,
    Queue,
    QueueState,
    RetrySchedule,
    band_of,
    check_retry_delays,
)
from mailroom.domain.reputation import THROTTLE_PER_MINUTE, ReputationState
from mailroom.domain.tracking import layered

log = logging.getLogger(__name__)

MAX_PAGE = 100
# Held messages released per transaction (and by the resume request itself):
# 100 SendMessageBatch calls, a fraction of a second.
RELEASE_PAGE_SIZE = 1000
# A message held back by the in-flight cap is offered again after this long.
IN_FLIGHT_RETRY_SECONDS = 5
THROTTLED_STATES = frozenset({ReputationState.THROTTLE.value, ReputationState.PAUSE.value})


def _not_found(queue_id: str) -> QueueNotFound:
    return QueueNotFound(f"no queue {queue_id!r}")


def _wanted_id(queue_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(queue_id)
    except ValueError:
        raise _not_found(queue_id) from None


def _check(queue: Queue) -> None:
    if queue.retry_delays is not None:
        check_retry_delays(queue.retry_delays)
        if not queue.retry_delays:
            raise InvalidRequest(
                "retry_delays is empty: give at least one delay, or null for the service's",
                details=[{"field": "retry_delays", "message": "empty"}],
            )


def _check_relay(uow: UnitOfWork, queue: Queue) -> None:
    """A queue's SMTP configuration must be one of its client's (422 unknown_smtp_config)."""
    if queue.smtp_config_id is None:
        return
    if uow.smtp_configs.get(queue.smtp_config_id, queue.client_id) is None:
        raise UnknownSmtpConfig(
            f"this client has no SMTP configuration {queue.smtp_config_id}",
            details=[{"field": "smtp_config_id", "message": "unknown SMTP configuration"}],
        )


def create_queue(uow: UnitOfWork, queue: Queue) -> Queue:
    _check(queue)
    with uow:
        _check_relay(uow, queue)
        uow.queues.add(queue)
        created = uow.queues.get(queue.client_id, queue.id)
        uow.commit()
    assert created is not None
    return created


def get_queue(uow: UnitOfWork, client_id: uuid.UUID, queue_id: str) -> Queue:
    with uow:
        found = uow.queues.get(client_id, _wanted_id(queue_id))
    if found is None:
        raise _not_found(queue_id)
    return found


def list_queues(
    uow: UnitOfWork, client_id: uuid.UUID, after: str | None, limit: int
) -> tuple[list[Queue], str | None]:
    """One page by name; the cursor is the last name of the page."""
    with uow:
        page = uow.queues.page(client_id, after, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return page, (page[-1].name if more and page else None)


def update_queue(
    uow: UnitOfWork, client_id: uuid.UUID, queue_id: str, changes: dict[str, object]
) -> Queue:
    """Change the given fields; a state change goes through pause/resume/drain."""
    with uow:
        current = uow.queues.get(client_id, _wanted_id(queue_id))
        if current is None:
            raise _not_found(queue_id)
        for name, value in changes.items():
            setattr(current, name, value)
        _check(current)
        if "smtp_config_id" in changes:
            _check_relay(uow, current)
        saved = uow.queues.save(current)
        uow.commit()
    return saved


def delete_queue(
    uow: UnitOfWork,
    queue: MessageQueue,
    client_id: uuid.UUID,
    queue_id: str,
    *,
    drain: bool,
    page_size: int = RELEASE_PAGE_SIZE,
) -> int:
    """Remove the queue; with unsent mail only with ``drain``. The unsent mail count.

    Draining here means: what it holds is still sent, through the client's
    default queue, which the rows fall back to (messages.queue_id ON DELETE
    SET NULL); new sends naming it get 422. Its held mail's first page goes
    out on its own band now; the rest is the default queue's to release
    (the scheduler's pass, ``release_requested``).
    """
    with uow:
        found = uow.queues.get(client_id, _wanted_id(queue_id))
        if found is None:
            raise _not_found(queue_id)
        unsent = uow.queues.unsent(found)
        if unsent and not drain:
            raise QueueNotEmpty(
                f"queue {found.name!r} holds {unsent} unsent messages: "
                "pass ?drain=true to delete it and still send them",
                details=[{"unsent": unsent}],
            )
        if unsent and found.state is QueueState.PAUSED:
            # Not paused while its first page is released.
            found.state = QueueState.DRAINING
            found = uow.queues.save(found)
        uow.commit()
    more = False
    if unsent:
        more = release_page(uow, queue, found, page_size).more
    with uow:
        uow.queues.remove(found)
        if more:
            uow.queues.request_release(uow.queues.default_of(client_id).id)
        uow.commit()
    return unsent


@dataclass(frozen=True, slots=True)
class StateChange:
    queue: Queue
    # Held messages put back on SQS by this call (the first page).
    released: int
    # Held mail is left: the scheduler's passes release it, oldest first.
    releasing: bool


def set_state(
    uow: UnitOfWork,
    queue: MessageQueue,
    client_id: uuid.UUID,
    queue_id: str,
    state: QueueState,
    *,
    page_size: int = RELEASE_PAGE_SIZE,
) -> StateChange:
    """Pause, resume or drain; resume and drain release held mail, oldest first.

    The state and the release mark are committed first; this call then
    releases one page, and the scheduler's passes release the rest in pages
    (``release_requested``), so the answer does not wait for 100,000
    SendMessageBatch calls. A claim racing a resume either holds a row (and
    a page releases it) or sees the queue active.
    """
    with uow:
        found = uow.queues.get(client_id, _wanted_id(queue_id))
        if found is None:
            raise _not_found(queue_id)
        found.state = state
        saved = uow.queues.save(found)
        if state is not QueueState.PAUSED:
            uow.queues.request_release(saved.id)
        uow.commit()
    if state is QueueState.PAUSED:
        return StateChange(saved, 0, False)
    page = release_page(uow, queue, saved, page_size)
    if not page.more:
        with uow:
            page = replace(page, more=not uow.queues.release_done(saved))
            uow.commit()
    return StateChange(saved, page.released, page.more)


@dataclass(frozen=True, slots=True)
class ReleasedPage:
    released: int
    # The page was full: more held rows may be left.
    more: bool


def release_page(
    uow: UnitOfWork, queue: MessageQueue, target: Queue, page_size: int
) -> ReleasedPage:
    """Put the oldest page of the queue's held mail on its band, exactly once.

    One transaction: lock the page (``FOR UPDATE SKIP LOCKED``), send it to
    SQS, turn the rows SQS took to ``queued`` with their ``released`` event,
    commit. A crash before the commit leaves every row held (a record that
    reached SQS finds its row held, is acknowledged unsent, and the next
    page sends it again); a worker that receives a record before the commit
    waits for the row's lock in its claim, then finds it queued. Rows SQS
    refused stay held and the call raises DependencyUnavailable.
    """
    with uow:
        rows = uow.queues.lock_held_page(target, page_size)
        if not rows:
            return ReleasedPage(0, False)
        band = target.band
        refused = queue.enqueue_many(
            [QueueEntry(r.id, r.trace_id, band=band, group_id=str(r.client_id)) for r in rows]
        )
        uow.queues.mark_released(target, [r.id for r in rows if r.id not in refused])
        uow.commit()
    if refused:
        raise DependencyUnavailable(
            f"{len(refused)} held messages could not be queued; they stay held and the "
            "scheduler's next pass releases them (or resume again)"
        )
    return ReleasedPage(len(rows), len(rows) == page_size)


@dataclass(slots=True)
class ReleaseReport:
    queues: int = 0
    pages: int = 0
    released: int = 0
    failed: bool = False
    budget_exhausted: bool = False


def release_requested(
    uow: UnitOfWork,
    queue: MessageQueue,
    *,
    page_size: int,
    deadline: float,
    queues_per_pass: int = 100,
    clock: Callable[[], float] = time.monotonic,
) -> ReleaseReport:
    """Release the held mail of resumed and draining queues, a page at a time.

    The scheduler's pass calls this: one page per queue in turn (a queue
    with 100,000 held messages does not starve one with ten), until every
    marked queue is done or ``deadline`` (``clock``'s) is reached; what is
    left is the next pass's. A queue whose held rows are all released loses
    its mark. Should SQS refuse, the pass stops; the rows stay held.
    """
    report = ReleaseReport()
    with uow:
        # Held mail a resume could not see (written by a send or a claim that
        # read the queue paused and committed after the release looked) is
        # marked here, so it waits at most one pass instead of the next resume.
        uow.queues.mark_stranded_held()
        targets = uow.queues.releasing(queues_per_pass)
        uow.commit()
    report.queues = len(targets)
    while targets:
        left = []
        released_before = report.released
        for target in targets:
            if clock() >= deadline:
                report.budget_exhausted = True
                return report
            try:
                page = release_page(uow, queue, target, page_size)
            except DependencyUnavailable:
                log.warning("the send queue refused held mail of queue %s", target.id)
                report.failed = True
                return report
            report.pages += 1
            report.released += page.released
            if page.more:
                left.append(target)
            else:
                with uow:
                    if not uow.queues.release_done(target):
                        # Rows another releaser had locked, or held anew.
                        left.append(target)
                    uow.commit()
        if report.released == released_before:
            # Nothing left that this pass can take (another releaser holds
            # the rows): the marks stay for the next pass.
            return report
        targets = left
    return report


def queue_stats(uow: UnitOfWork, client_id: uuid.UUID, queue_id: str) -> tuple[Queue, QueueStats]:
    with uow:
        found = uow.queues.get(client_id, _wanted_id(queue_id))
        if found is None:
            raise _not_found(queue_id)
        return found, uow.queues.stats(found)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an accepted send goes: its queue, band, and whether it is held."""

    queue: Queue

    @property
    def held(self) -> bool:
        return self.queue.state is QueueState.PAUSED

    @property
    def band(self) -> Band:
        return self.queue.band


def apply_placement(message: Message, placement: Placement) -> None:
    """What the queue decides of the message: held while paused; bulk if the queue is.

    A bulk queue's mail carries RFC 8058 one-click unsubscribe, which needs
    one recipient: a message to several stays as the send asked. A queue's
    SMTP configuration is the message's relay unless the send named one:
    the send's, then the queue's, then the client's default (the worker's
    ``relay_for``). Decided here, at acceptance, so the worker pays nothing
    for it; mail already accepted keeps the relay it was accepted with.
    """
    # A scheduled message (issue 18) keeps its time: the scheduler releases it.
    if placement.held and message.status is not MessageStatus.SCHEDULED:
        message.status = MessageStatus.HELD
    single = len(message.to) == 1 and not message.cc and not message.bcc
    message.options = placed_options(message.options, placement.queue, single=single)


def placed_options(options: SendOptions, queue: Queue, *, single: bool) -> SendOptions:
    """The send's options under its queue's: bulk, tracking and relay (``apply_placement``).

    A bulk batch's messages (one recipient each) take the same, once for the batch.
    """
    if queue.bulk and not options.bulk and single:
        options = replace(options, bulk=True)
    if queue.tracking:
        # Under the template's default and the send's choice (issue 21).
        options = replace(options, tracking=layered(queue.tracking, options.tracking))
    if queue.smtp_config_id is not None and options.smtp_config_id is None:
        options = replace(options, smtp_config_id=str(queue.smtp_config_id))
    return options


def place(uow: UnitOfWork, client_id: uuid.UUID, name: str | None) -> Placement:
    """The queue a send goes to, inside the send's transaction (see the module docstring)."""
    if name is None or name == DEFAULT_QUEUE_NAME:
        found: Queue | None = uow.queues.default_of(client_id)
    else:
        found = uow.queues.named(client_id, name)
    return Placement(_open(found, name))


def queue_checker(uow: UnitOfWork, client_id: uuid.UUID) -> Callable[[str | None], None]:
    """``place``'s refusals with nothing written: a schedule's payload is checked so (issue 18).

    The client's default queue is not made here: a send makes it on first
    use, so its absence refuses nothing.
    """

    def check(name: str | None) -> None:
        with uow:
            found = uow.queues.named(client_id, name or DEFAULT_QUEUE_NAME)
        if found is None and name in (None, DEFAULT_QUEUE_NAME):
            return
        _open(found, name)

    return check


def _open(found: Queue | None, name: str | None) -> Queue:
    """The queue, unless it is unknown (422) or draining (409)."""
    if found is None:
        raise UnknownQueue(
            f"this client has no queue named {name!r}",
            details=[{"field": "queue", "message": "unknown queue"}],
        )
    if found.state is QueueState.DRAINING:
        raise QueueDraining(
            f"queue {found.name!r} is draining: it sends what it holds and takes no new mail",
            details=[{"field": "queue", "queue_id": str(found.id)}],
        )
    return found


def queue_entries(
    uow: UnitOfWork, message_ids: Sequence[uuid.UUID], *, delay_seconds: int = 0
) -> list[QueueEntry]:
    """The queue records for these messages, in the order given: one statement.

    Each goes on the band of its queue (the client's default queue when it
    has none assigned), with its client's id as its SQS fair-queue group:
    what the send path decides at acceptance, for every path that puts a
    message on SQS again later (retry, reconciler, batches, reschedule).
    Called inside the caller's transaction. A held message gets no record
    (its queue is paused: the resume releases it), nor does an id with no row.
    """
    by_id = {route.message_id: route for route in uow.queues.routes(message_ids)}
    return [
        QueueEntry(
            route.message_id,
            route.trace_id,
            delay_seconds,
            band_of(route.priority),
            group_id=str(route.client_id),
        )
        for message_id in message_ids
        if (route := by_id.get(message_id)) is not None and route.status is not MessageStatus.HELD
    ]


# ---- the claim gate ---------------------------------------------------------


@dataclass(slots=True)
class Admission:
    """A batch's ids sorted by the gate: claim now, held (acknowledge), or later."""

    claimable: list[uuid.UUID] = field(default_factory=list)
    held: set[uuid.UUID] = field(default_factory=set)
    # id -> (seconds to wait, the band it goes back on)
    deferred: dict[uuid.UUID, tuple[int, Band]] = field(default_factory=dict)
    # The claimable messages whose queue has its own retry schedule.
    schedules: dict[uuid.UUID, RetrySchedule] = field(default_factory=dict)
    # The messages whose queue has its own provider order (over the client's).
    orders: dict[uuid.UUID, list[str]] = field(default_factory=dict)
    # (message id, queue id) of the claimable ones the gate saw active: the
    # claim leaves out any whose queue was paused since (the read-claim window).
    queues: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)


class ClaimGate:
    """Pause, send rates and the per-client in-flight cap, checked when a batch is claimed."""

    def __init__(
        self,
        limiter: ClaimRateLimiter | None,
        *,
        client_sends_per_minute: int | None = None,
        client_max_in_flight: int | None = None,
        bands: Callable[[int], Band] = band_of,
    ) -> None:
        self._limiter = limiter
        self._client_rate = client_sends_per_minute
        self._max_in_flight = client_max_in_flight
        self._band = bands

    def admit(self, uow: UnitOfWork, message_ids: Sequence[uuid.UUID]) -> Admission:
        admission = Admission()
        # One statement in the common case (nothing paused): the batch's
        # queues, and each client's in-flight count when capped.
        with uow:
            views = uow.queues.claim_view(message_ids, count_in_flight=bool(self._max_in_flight))
            paused = [v.message_id for v in views if v.state is QueueState.PAUSED]
            if paused:
                admission.held = uow.queues.hold_paused(paused)
                uow.commit()
        in_flight = {v.client_id: v.in_flight for v in views if v.in_flight}
        seen = {v.message_id for v in views}
        admission.schedules = {
            v.message_id: RetrySchedule(v.max_retries, v.retry_delays)
            for v in views
            if v.max_retries is not None or v.retry_delays is not None
        }
        admission.orders = {v.message_id: v.provider_order for v in views if v.provider_order}
        admission.queues = [(v.message_id, v.queue_id) for v in views if v.queue_id is not None]
        # Not queued (sent, claimed, missing): the claim explains those as before.
        admission.claimable = [m for m in message_ids if m not in seen]
        groups: dict[tuple[uuid.UUID, str], list[ClaimView]] = defaultdict(list)
        for view in views:
            if view.message_id in admission.held or view.state is QueueState.PAUSED:
                # Paused but not held by us: resumed meanwhile, or held by
                # another worker; claim decides.
                if view.message_id not in admission.held:
                    admission.claimable.append(view.message_id)
                continue
            groups[(view.client_id, view.queue_key)].append(view)
        room = {
            client_id: self._max_in_flight - count if self._max_in_flight else None
            for client_id, count in in_flight.items()
        }
        for (client_id, queue_key), members in groups.items():
            allowed = len(members)
            wait = IN_FLIGHT_RETRY_SECONDS
            if self._max_in_flight:
                left = room.get(client_id, self._max_in_flight) or 0
                allowed = min(allowed, max(0, left))
                room[client_id] = left - allowed
            buckets = self._buckets(client_id, queue_key, members[0])
            if buckets and allowed and self._limiter is not None:
                grant = self._limiter.take_up_to(buckets, allowed)
                if grant.granted < allowed:
                    wait = max(1, int(grant.wait_seconds + 0.999))
                allowed = grant.granted
            for index, view in enumerate(members):
                if index < allowed:
                    admission.claimable.append(view.message_id)
                else:
                    # Spread the rest over the refill, in their order, rather
                    # than wake them all at the same second.
                    per_token = 60 / min(b.per_minute for b in buckets) if buckets else 0
                    delay = min(MAX_DELAY_SECONDS, wait + int(per_token * (index - allowed)))
                    admission.deferred[view.message_id] = (delay, self._band(view.priority))
        if admission.deferred:
            with uow:
                uow.queues.mark_deferred({m: d for m, (d, _) in admission.deferred.items()})
                uow.commit()
        return admission

    def _buckets(self, client_id: uuid.UUID, queue_key: str, view: ClaimView) -> list[SendBucket]:
        buckets = []
        if view.rate_limit_per_minute:
            buckets.append(SendBucket(f"queue:{queue_key}", view.rate_limit_per_minute))
        if self._client_rate:
            buckets.append(SendBucket(f"client:{client_id}", self._client_rate))
        if view.reputation_state in THROTTLED_STATES:
            # Issue 21: a throttled (or paused) client's mail already queued
            # goes out at the reputation rate, whatever its queue allows.
            buckets.append(SendBucket(f"reputation:{client_id}", THROTTLE_PER_MINUTE))
        return buckets
