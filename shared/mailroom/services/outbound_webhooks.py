"""Outbound webhooks (issue 19): endpoints, the relay, the dispatcher, replay and the feed.

The path of an event:

1. Something inserts into ``message_events``; a trigger copies the row to the
   ``webhook_events`` outbox in the same transaction (migration w19whk01).
2. ``relay`` (the webhook-tick function, and each dispatcher invocation after
   its batch) numbers new outbox rows for the feed, fans each out to the
   client's enabled endpoints that want its type (one ``webhook_deliveries``
   row each), and puts due deliveries on the dispatcher queue. Only one relay
   numbers at a time (an advisory lock), so feed order is commit order.
3. ``dispatch`` (the webhook-dispatcher function) claims deliveries, signs
   and posts them, and records every attempt. A retry due within SQS's 15
   minutes goes back on the queue with a delay; a later one waits in
   PostgreSQL until a relay finds it due.

At least once: a delivery is only final once its outcome is committed; a
dispatcher that dies mid-batch leaves its claims to lapse and its queue
messages to reappear, and the relay re-queues anything due and not on the
queue. Receivers deduplicate by ``webhook-id``.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mailroom.adapters import tracing
from mailroom.adapters.db.outbound_webhooks import (
    AttemptRecord,
    ClaimedDelivery,
    DeliveryResult,
)
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.webhook_queue import MAX_SQS_DELAY_SECONDS, WebhookQueue
from mailroom.adapters.webhook_sender import WebhookSender
from mailroom.domain.errors import (
    DependencyUnavailable,
    InvalidRequest,
    SecretsNotConfigured,
    UnsafeWebhookUrl,
    WebhookDeliveryNotFound,
    WebhookEndpointNotFound,
    WebhookLimitReached,
)
from mailroom.domain.outbound_webhooks import (
    DISABLE_AFTER,
    ENDPOINT_DISABLED,
    MAX_ENDPOINTS_PER_CLIENT,
    MESSAGE_EVENT_TYPES,
    OPENS_CHOICES,
    SUBSCRIBABLE_TYPES,
    TEST_EVENT,
    AttemptOutcome,
    DeliveryStatus,
    Endpoint,
    OutboxEvent,
    clean_description,
    encode_body,
    event_body,
    event_id,
    internal_types_for,
    new_secret,
    next_attempt_delay,
    parse_event_types,
    parse_webhook_url,
    secret_context,
    secret_key,
    signed_headers,
)
from mailroom.domain.sealed_secrets import SealedSecretError, SecretKeyring
from mailroom.domain.tenancy import Actor, AuditEntry

log = logging.getLogger(__name__)

# A dispatcher's claim on a delivery outlasts one attempt (timeout) with room.
CLAIM_LEASE = timedelta(seconds=60)
# A queued delivery is not queued again before this (SQS delay + processing).
QUEUE_HOLD = timedelta(minutes=5)
# An endpoint with all its lanes busy gets new deliveries back this much later.
DEFER_BUSY_ENDPOINT = timedelta(seconds=5)
FEED_LIMIT_MAX = 500
MAX_TRACKED_SLOW = 10_000
REPLAY_MAX_EVENTS = 10_000
Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def _audit(
    actor: Actor,
    action: str,
    endpoint: Endpoint,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> AuditEntry:
    return actor.entry(action, ("webhook", str(endpoint.id)), before, after)


def _keyring(keyring: SecretKeyring | None) -> SecretKeyring:
    if keyring is None:
        raise SecretsNotConfigured(
            "webhook secrets cannot be stored: SECRETS_ENCRYPTION_KEYS is not configured"
        )
    return keyring


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    endpoint: Endpoint
    secret: str = field(repr=False)


# --- endpoints -------------------------------------------------------------------


def create_endpoint(
    uow: UnitOfWork,
    keyring: SecretKeyring | None,
    client_id: uuid.UUID,
    *,
    url: str,
    events: Sequence[str] | None,
    description: str | None,
    allow_private: bool,
    actor: Actor,
    opens: str = "all",
) -> CreatedEndpoint:
    ring = _keyring(keyring)
    _check_opens(opens)
    parse_webhook_url(url, allow_private=allow_private)
    types = parse_event_types(events)
    description = clean_description(description)
    endpoint_id = uuid.uuid4()
    secret = new_secret()
    endpoint = Endpoint(
        id=endpoint_id,
        client_id=client_id,
        url=url,
        description=description,
        event_types=types,
        secret_sealed=ring.seal(secret.encode(), context=secret_context(endpoint_id)),
        opens=opens,
    )
    with uow:
        # The client's row lock serialises creations: the limit cannot be raced.
        if uow.clients.get_for_update(client_id) is None:
            raise WebhookEndpointNotFound("no such client")
        if len(uow.webhooks.list_endpoints(client_id)) >= MAX_ENDPOINTS_PER_CLIENT:
            raise WebhookLimitReached(
                f"a client may have at most {MAX_ENDPOINTS_PER_CLIENT} webhook endpoints; "
                "delete one first",
                details=[{"max_endpoints": MAX_ENDPOINTS_PER_CLIENT}],
            )
        uow.webhooks.add_endpoint(endpoint)
        uow.audit.append(_audit(actor, "webhook.create", endpoint, None, endpoint.audit_view()))
        uow.commit()
        stored = uow.webhooks.get_endpoint(endpoint_id) or endpoint
    return CreatedEndpoint(stored, secret)


def _check_opens(opens: str) -> None:
    if opens not in OPENS_CHOICES:
        raise InvalidRequest(
            f"opens must be one of {', '.join(OPENS_CHOICES)}",
            details=[{"field": "opens", "allowed": list(OPENS_CHOICES)}],
        )


def list_endpoints(uow: UnitOfWork, client_id: uuid.UUID) -> list[Endpoint]:
    with uow:
        return uow.webhooks.list_endpoints(client_id)


def parse_endpoint_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw) if len(raw) <= 64 else _not_found(raw)
    except ValueError:
        return _not_found(raw)


def _not_found(raw: str) -> uuid.UUID:
    raise WebhookEndpointNotFound(f"no webhook endpoint {raw[:64]!r} for this client")


def _owned(
    uow: UnitOfWork, client_id: uuid.UUID, endpoint_id: uuid.UUID, *, for_update: bool = False
) -> Endpoint:
    endpoint = uow.webhooks.get_endpoint(endpoint_id, for_update=for_update)
    # Another client's endpoint answers exactly like one that does not exist.
    if endpoint is None or endpoint.client_id != client_id:
        _not_found(str(endpoint_id))
        raise AssertionError  # unreachable: _not_found raises
    return endpoint


def get_endpoint(uow: UnitOfWork, client_id: uuid.UUID, endpoint_id: uuid.UUID) -> Endpoint:
    with uow:
        return _owned(uow, client_id, endpoint_id)


_UNSET: Any = object()


def update_endpoint(
    uow: UnitOfWork,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    url: str | None = None,
    events: Sequence[str] | None = _UNSET,
    description: str | None = _UNSET,
    enabled: bool | None = None,
    opens: str | None = None,
    allow_private: bool,
    actor: Actor,
) -> Endpoint:
    """Change what is given; ``enabled: true`` re-enables a disabled endpoint."""
    if opens is not None:
        _check_opens(opens)
    if url is not None:
        parse_webhook_url(url, allow_private=allow_private)
    types = parse_event_types(events) if events is not _UNSET else _UNSET
    cleaned = clean_description(description) if description is not _UNSET else _UNSET
    with uow:
        endpoint = _owned(uow, client_id, endpoint_id, for_update=True)
        before = endpoint.audit_view()
        if url is not None:
            endpoint.url = url
        if types is not _UNSET:
            endpoint.event_types = list(types) if types is not None else None
        if cleaned is not _UNSET:
            endpoint.description = cleaned
        if opens is not None:
            endpoint.opens = opens
        if enabled is True and endpoint.disabled_at is not None:
            endpoint.disabled_at = None
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        elif enabled is False and endpoint.disabled_at is None:
            endpoint.disabled_at = _now()
            endpoint.disabled_reason = f"disabled by {actor.name}"
        uow.webhooks.save_endpoint(endpoint)
        uow.audit.append(_audit(actor, "webhook.update", endpoint, before, endpoint.audit_view()))
        uow.commit()
        return uow.webhooks.get_endpoint(endpoint_id) or endpoint


def delete_endpoint(
    uow: UnitOfWork, client_id: uuid.UUID, endpoint_id: uuid.UUID, *, actor: Actor
) -> None:
    with uow:
        endpoint = _owned(uow, client_id, endpoint_id, for_update=True)
        uow.webhooks.delete_endpoint(endpoint_id)
        uow.audit.append(_audit(actor, "webhook.delete", endpoint, endpoint.audit_view(), None))
        uow.commit()


def rotate_secret(
    uow: UnitOfWork,
    keyring: SecretKeyring | None,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    grace: timedelta,
    actor: Actor,
    now: datetime | None = None,
) -> CreatedEndpoint:
    """A new secret; the old one keeps signing beside it for ``grace`` (none when zero)."""
    ring = _keyring(keyring)
    if grace < timedelta(0):
        raise InvalidRequest("the grace period cannot be negative")
    moment = now or _now()
    secret = new_secret()
    with uow:
        endpoint = _owned(uow, client_id, endpoint_id, for_update=True)
        before = endpoint.audit_view()
        if grace > timedelta(0):
            endpoint.previous_secret_sealed = endpoint.secret_sealed
            endpoint.previous_secret_expires_at = moment + grace
        else:
            endpoint.previous_secret_sealed = None
            endpoint.previous_secret_expires_at = None
        endpoint.secret_sealed = ring.seal(secret.encode(), context=secret_context(endpoint_id))
        uow.webhooks.save_endpoint(endpoint)
        uow.audit.append(
            _audit(actor, "webhook.rotate_secret", endpoint, before, endpoint.audit_view())
        )
        uow.commit()
    return CreatedEndpoint(endpoint, secret)


def send_test(
    uow: UnitOfWork,
    queue: WebhookQueue,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> tuple[str, int]:
    """A ``webhook.test`` event to this endpoint alone; (its webhook-id, its delivery id)."""
    moment = now or _now()
    with uow:
        endpoint = _owned(uow, client_id, endpoint_id)
        outbox_id = uow.webhooks.add_event(
            client_id, "webhook_test", {"endpoint_id": str(endpoint.id)}, moment
        )
        (delivery_id,) = uow.webhooks.add_deliveries(
            [(endpoint.id, outbox_id)], moment, hold_until=moment + QUEUE_HOLD
        )
        sent = {"webhook_id": event_id(outbox_id), "delivery_id": delivery_id}
        uow.audit.append(_audit(actor, "webhook.test", endpoint, None, sent))
        uow.commit()
    _queue_now(uow, queue, [delivery_id], moment)
    return event_id(outbox_id), delivery_id


def _queue_now(uow: UnitOfWork, queue: WebhookQueue, ids: Sequence[int], now: datetime) -> None:
    """Queue deliveries just made due; if SQS refuses, the relay queues them later."""
    if not ids:
        return
    try:
        queue.send(ids)
    except DependencyUnavailable:
        log.warning("webhook queue refused %d deliveries; the relay retries", len(ids))


# --- the relay ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayReport:
    numbered: int = 0
    deliveries: int = 0
    queued: int = 0
    relay_busy: bool = False


def relay(
    uow: UnitOfWork, queue: WebhookQueue, *, now: datetime | None = None, batch_size: int = 1000
) -> RelayReport:
    """Number and fan out new outbox rows, then queue every due delivery not on the queue."""
    moment = now or _now()
    numbered = deliveries = 0
    busy = False
    with uow:
        if uow.webhooks.take_relay_lock():
            events = uow.webhooks.unrelayed_events(batch_size)
            uow.webhooks.number_events([e.id for e in events])
            pairs = _fan_out(uow, events)
            uow.webhooks.add_deliveries(pairs, moment)
            numbered, deliveries = len(events), len(pairs)
        else:
            busy = True
        due = uow.webhooks.take_due(moment, QUEUE_HOLD, batch_size)
        uow.commit()
    if due:
        try:
            queue.send(due)
        except DependencyUnavailable:
            # Their hold lapses and a later relay queues them again.
            log.warning("webhook queue refused %d due deliveries", len(due))
            due = []
    return RelayReport(numbered, deliveries, len(due), busy)


def _fan_out(uow: UnitOfWork, events: Sequence[OutboxEvent]) -> list[tuple[uuid.UUID, int]]:
    sendable = [e for e in events if e.public_type is not None and e.public_type != TEST_EVENT]
    if not sendable:
        return []
    by_client: dict[uuid.UUID, list[Endpoint]] = defaultdict(list)
    for endpoint in uow.webhooks.enabled_endpoints_of([e.client_id for e in sendable]):
        by_client[endpoint.client_id].append(endpoint)
    pairs = []
    for event in sendable:
        public = event.public_type
        assert public is not None
        for endpoint in by_client.get(event.client_id, []):
            if endpoint.wants(public, event.detail):
                pairs.append((endpoint.id, event.id))
    return pairs


# --- the dispatcher ------------------------------------------------------------------


@dataclass
class DispatchReport:
    claimed: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    skipped: int = 0
    # Put back on the queue: their endpoint already had its lanes in flight.
    deferred: int = 0
    # Lanes still sending when the invocation stopped waiting (slow endpoints).
    still_running: int = 0
    disabled_endpoints: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Job:
    delivery: ClaimedDelivery
    endpoint: Endpoint
    webhook_id: str
    body: bytes
    keys: tuple[bytes, ...]


class _Collector:
    """Outcomes of the lanes that end while their invocation still waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = True
        self._results: list[tuple[_Job, AttemptOutcome]] = []

    def add(self, results: Sequence[tuple[_Job, AttemptOutcome]]) -> bool:
        """False once the invocation stopped waiting: the lane records itself."""
        with self._lock:
            if self._open:
                self._results.extend(results)
            return self._open

    def close(self) -> list[tuple[_Job, AttemptOutcome]]:
        with self._lock:
            self._open = False
            return self._results


@dataclass
class Dispatcher:
    """Everything ``dispatch`` needs; built once per container (bootstrap).

    Deliveries are sent in lanes: each endpoint gets at most ``per_endpoint``
    lanes in flight in this process at once (its connection pool's size), and
    each lane records its own outcomes when it ends. An invocation waits
    ``batch_wait_seconds`` for its lanes; a lane still running then (a slow
    endpoint) finishes on its own, so a 5 s endpoint neither holds the batch
    nor the other endpoints' threads. An endpoint already at its limit has
    its new deliveries put back on the queue for a few seconds (no attempt is
    counted). If the process stops meanwhile (a Lambda container frozen or
    gone), the lane's claims lapse and the deliveries are sent again: at least
    once, and a late outcome never overwrites a newer claim's (claim tokens).
    """

    uow: Callable[[], UnitOfWork]
    sender: WebhookSender
    queue: WebhookQueue
    keyring: SecretKeyring | None
    allow_private: bool = False
    concurrency: int = 32
    per_endpoint: int = 4
    batch_wait_seconds: float = 2.0
    clock: Clock = _now
    claim_lease: timedelta = CLAIM_LEASE
    rng: random.Random = field(default_factory=random.Random)
    _in_flight: dict[uuid.UUID, int] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _slow: dict[uuid.UUID, int] = field(default_factory=dict, init=False, repr=False)

    def dispatch(self, delivery_ids: Sequence[int]) -> DispatchReport:
        report = DispatchReport()
        now = self.clock()
        token = uuid.uuid4()
        with self.uow() as uow:
            claimed = uow.webhooks.claim(delivery_ids, now, self.claim_lease, token)
            endpoints = uow.webhooks.endpoints_by_id([c.endpoint_id for c in claimed])
            events = uow.webhooks.events_by_id([c.event_id for c in claimed])
            uow.commit()
        report.claimed = len(claimed)
        if not claimed:
            return report
        jobs, skipped, unsendable = self._jobs(claimed, endpoints, events, now)
        if skipped:
            with self.uow() as uow:
                uow.webhooks.skip(skipped, now)
                uow.commit()
            report.skipped = len(skipped)
        if unsendable:
            self._record(unsendable, token, report)
        lanes, deferred = self._lanes(jobs)
        if deferred:
            self._defer(deferred, token, now)
            report.deferred = len(deferred)
        collector = _Collector()
        with self._lock:
            slow = {lane[0].endpoint.id for lane in lanes if lane[0].endpoint.id in self._slow}
        awaited = []
        # A pool per invocation: lanes left running (slow endpoints) keep their
        # threads without taking any from the next invocation's lanes.
        pool = ThreadPoolExecutor(
            max_workers=max(1, min(self.concurrency, len(lanes))),
            thread_name_prefix="webhook-lane",
        )
        for lane in lanes:
            # Each lane runs in a copy of this context, so its POST spans are
            # children of the dispatcher's batch span (threads start empty).
            future = pool.submit(
                contextvars.copy_context().run, self._run_lane, lane, token, report, collector
            )
            # An endpoint seen answering slowly is not waited for at all: its
            # lanes record themselves.
            if lane[0].endpoint.id not in slow:
                awaited.append(future)
        done, running = wait(awaited, timeout=self.batch_wait_seconds)
        pool.shutdown(wait=False)
        # Lanes that ended in time are recorded together (one transaction);
        # later ones record themselves.
        finished = collector.close()
        report.still_running = len(running)
        for future in done:
            future.result()
        # A failure here fails the batch: SQS delivers it again once claims lapse.
        self._record(finished, token, report)
        return report

    def _lanes(self, jobs: Sequence[_Job]) -> tuple[list[list[_Job]], list[_Job]]:
        by_endpoint: dict[uuid.UUID, list[_Job]] = defaultdict(list)
        for job in jobs:
            by_endpoint[job.endpoint.id].append(job)
        lanes: list[list[_Job]] = []
        deferred: list[_Job] = []
        with self._lock:
            for endpoint_id, endpoint_jobs in by_endpoint.items():
                free = self.per_endpoint - self._in_flight.get(endpoint_id, 0)
                if free <= 0:
                    deferred.extend(endpoint_jobs)
                    continue
                width = min(free, len(endpoint_jobs))
                self._in_flight[endpoint_id] = self._in_flight.get(endpoint_id, 0) + width
                lanes.extend(endpoint_jobs[i::width] for i in range(width))
        return lanes, deferred

    def _defer(self, jobs: Sequence[_Job], token: uuid.UUID, now: datetime) -> None:
        due = now + DEFER_BUSY_ENDPOINT
        ids = [job.delivery.id for job in jobs]
        with self.uow() as uow:
            uow.webhooks.defer(ids, token, due, due + QUEUE_HOLD)
            uow.commit()
        try:
            self.queue.send(ids, delay_seconds=int(DEFER_BUSY_ENDPOINT.total_seconds()))
        except DependencyUnavailable:
            log.warning("deferred webhook deliveries not queued; the relay queues them")

    def _run_lane(
        self,
        lane: Sequence[_Job],
        token: uuid.UUID,
        report: DispatchReport,
        collector: _Collector,
    ) -> None:
        try:
            results = []
            for job in lane:
                with tracing.span(
                    "webhook.post",
                    endpoint=str(job.endpoint.id),
                    webhook_id=job.webhook_id,
                    attempt=job.delivery.attempts + 1,
                ) as post_span:
                    outcome = self._attempt(job)
                    if post_span is not None:
                        post_span.set_attribute("http.status_code", outcome.status_code or 0)
                        post_span.set_attribute("latency_ms", outcome.latency_ms)
                results.append((job, outcome))
                self._note_latency(job.endpoint.id, outcome.latency_ms)
            if not collector.add(results):
                self._record(results, token, report)
        finally:
            with self._lock:
                endpoint_id = lane[0].endpoint.id
                left = self._in_flight.get(endpoint_id, 1) - 1
                if left > 0:
                    self._in_flight[endpoint_id] = left
                else:
                    self._in_flight.pop(endpoint_id, None)

    def _note_latency(self, endpoint_id: uuid.UUID, latency_ms: int) -> None:
        """Remember which endpoints answer slower than a batch waits (last answer decides)."""
        with self._lock:
            if latency_ms >= self.batch_wait_seconds * 1000 / 2:
                self._slow[endpoint_id] = latency_ms
                while len(self._slow) > MAX_TRACKED_SLOW:
                    self._slow.pop(next(iter(self._slow)))
            else:
                self._slow.pop(endpoint_id, None)

    def _attempt(self, job: _Job) -> AttemptOutcome:
        try:
            url = parse_webhook_url(job.endpoint.url, allow_private=self.allow_private)
        except UnsafeWebhookUrl as error:
            return AttemptOutcome(None, 0, error=f"blocked: {error.message}")
        timestamp = int(self.clock().timestamp())
        headers = signed_headers(job.keys, job.webhook_id, timestamp, job.body)
        try:
            return self.sender.post(str(job.endpoint.id), url, headers, job.body)
        except Exception as error:
            log.exception("webhook post raised")
            return AttemptOutcome(None, 0, error=f"error: {type(error).__name__}")

    def _jobs(
        self,
        claimed: Sequence[ClaimedDelivery],
        endpoints: dict[uuid.UUID, Endpoint],
        events: dict[int, OutboxEvent],
        now: datetime,
    ) -> tuple[list[_Job], list[int], list[tuple[_Job, AttemptOutcome]]]:
        keyring = _keyring(self.keyring)
        bodies: dict[int, bytes] = {}
        keys_of: dict[uuid.UUID, tuple[bytes, ...]] = {}
        jobs: list[_Job] = []
        skipped: list[int] = []
        unsendable: list[tuple[_Job, AttemptOutcome]] = []
        for delivery in claimed:
            endpoint = endpoints.get(delivery.endpoint_id)
            event = events.get(delivery.event_id)
            if endpoint is None or event is None or not endpoint.enabled:
                skipped.append(delivery.id)
                continue
            body = bodies.get(event.id)
            if body is None:
                body = bodies[event.id] = encode_body(event_body(event))
            job = _Job(delivery, endpoint, event_id(event.id), body, ())
            keys = keys_of.get(endpoint.id)
            if keys is None:
                try:
                    keys = keys_of[endpoint.id] = _signing_keys(keyring, endpoint, now)
                except SealedSecretError as error:
                    unsendable.append((job, AttemptOutcome(None, 0, error=f"secret: {error}")))
                    continue
            jobs.append(_Job(delivery, endpoint, job.webhook_id, body, keys))
        return jobs, skipped, unsendable

    def _record(
        self,
        outcomes: Sequence[tuple[_Job, AttemptOutcome]],
        token: uuid.UUID,
        report: DispatchReport,
    ) -> None:
        if not outcomes:
            return
        now = self.clock()
        results: list[DeliveryResult] = []
        requeue: dict[int, list[int]] = defaultdict(list)
        succeeded: set[uuid.UUID] = set()
        failed: set[uuid.UUID] = set()
        gone: set[uuid.UUID] = set()
        for job, outcome in outcomes:
            attempts = job.delivery.attempts + 1
            next_at: datetime | None = None
            enqueued_until: datetime | None = None
            if outcome.succeeded:
                status = DeliveryStatus.SUCCEEDED
                succeeded.add(job.endpoint.id)
                with self._lock:
                    report.succeeded += 1
            else:
                with self._lock:
                    report.failed_attempts += 1
                failed.add(job.endpoint.id)
                delay = None
                if outcome.gone:
                    gone.add(job.endpoint.id)
                else:
                    delay = next_attempt_delay(
                        attempts, retry_after=outcome.retry_after, rng=self.rng
                    )
                if delay is None:
                    status = DeliveryStatus.FAILED
                    with self._lock:
                        report.gave_up += 1
                else:
                    status = DeliveryStatus.PENDING
                    next_at = now + delay
                    seconds = int(delay.total_seconds() + 0.999)
                    if seconds <= MAX_SQS_DELAY_SECONDS:
                        requeue[seconds].append(job.delivery.id)
                        enqueued_until = next_at + QUEUE_HOLD
            error = outcome.error
            if error is None and not outcome.succeeded:
                error = f"HTTP {outcome.status_code}"
            results.append(
                DeliveryResult(
                    delivery_id=job.delivery.id,
                    claim_token=token,
                    endpoint_id=job.endpoint.id,
                    status=status,
                    next_attempt_at=next_at,
                    enqueued_until=enqueued_until,
                    at=now,
                    status_code=outcome.status_code,
                    latency_ms=outcome.latency_ms,
                    response_excerpt=outcome.response_excerpt,
                    error=error,
                )
            )
        # An endpoint that succeeded at least once in this batch is not failing.
        failed -= succeeded
        with self.uow() as uow:
            uow.webhooks.record(results)
            uow.webhooks.mark_endpoints(succeeded=sorted(succeeded), failed=sorted(failed), now=now)
            for endpoint_id in sorted(failed):
                endpoint = uow.webhooks.get_endpoint(endpoint_id, for_update=True)
                if endpoint is None or endpoint.disabled_at is not None:
                    continue
                if endpoint_id in gone:
                    reason = "the endpoint answered 410 Gone"
                elif (
                    endpoint.failing_since is not None
                    and now - endpoint.failing_since >= DISABLE_AFTER
                ):
                    reason = "every attempt failed for 5 days"
                else:
                    continue
                _disable(uow, endpoint, reason, now)
                with self._lock:
                    report.disabled_endpoints.append(str(endpoint_id))
            uow.commit()
        for seconds, ids in sorted(requeue.items()):
            try:
                self.queue.send(ids, delay_seconds=seconds)
            except DependencyUnavailable:
                log.warning("webhook retries not queued; the relay queues them when due")


def _disable(uow: UnitOfWork, endpoint: Endpoint, reason: str, now: datetime) -> None:
    endpoint.disabled_at = now
    endpoint.disabled_reason = reason
    uow.webhooks.save_endpoint(endpoint)
    # The client is told: the event reaches its other endpoints and the feed.
    uow.webhooks.add_event(
        endpoint.client_id,
        "endpoint_disabled",
        {"endpoint_id": str(endpoint.id), "url": endpoint.url, "reason": reason},
        now,
    )
    log.warning("webhook endpoint disabled", extra={"endpoint_id": str(endpoint.id)})


def _signing_keys(keyring: SecretKeyring, endpoint: Endpoint, now: datetime) -> tuple[bytes, ...]:
    context = secret_context(endpoint.id)
    keys = [secret_key(keyring.open(endpoint.secret_sealed, context=context).decode())]
    if (
        endpoint.previous_secret_sealed is not None
        and endpoint.previous_secret_expires_at is not None
        and now < endpoint.previous_secret_expires_at
    ):
        previous = keyring.open(endpoint.previous_secret_sealed, context=context).decode()
        keys.append(secret_key(previous))
    return tuple(keys)


# --- the delivery log, retry, replay and the feed --------------------------------------


def list_attempts(
    uow: UnitOfWork,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    before: int | None = None,
    limit: int = 100,
) -> list[AttemptRecord]:
    with uow:
        _owned(uow, client_id, endpoint_id)
        return uow.webhooks.attempts(endpoint_id, before=before, limit=limit)


def retry_delivery(
    uow: UnitOfWork,
    queue: WebhookQueue,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    delivery_id: int,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> int:
    """The same event to the same endpoint once more, now (same webhook-id); a new delivery."""
    moment = now or _now()
    with uow:
        endpoint = _owned(uow, client_id, endpoint_id)
        found = uow.webhooks.delivery_of(endpoint_id, delivery_id)
        if found is None:
            raise WebhookDeliveryNotFound(f"no delivery {delivery_id} of this endpoint")
        _require_enabled(endpoint)
        (new_id,) = uow.webhooks.add_deliveries(
            [(endpoint_id, found[0])], moment, hold_until=moment + QUEUE_HOLD
        )
        retried = {"delivery_id": delivery_id, "new_delivery_id": new_id}
        uow.audit.append(_audit(actor, "webhook.retry", endpoint, None, retried))
        uow.commit()
    _queue_now(uow, queue, [new_id], moment)
    return new_id


def replay(
    uow: UnitOfWork,
    queue: WebhookQueue,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    start: datetime,
    end: datetime,
    actor: Actor,
    now: datetime | None = None,
) -> int:
    """Every event in [start, end) the endpoint subscribes to, sent again; how many."""
    if end <= start:
        raise InvalidRequest("end must be after start", details=[{"field": "end"}])
    moment = now or _now()
    with uow:
        endpoint = _owned(uow, client_id, endpoint_id)
        _require_enabled(endpoint)
        wanted = endpoint.event_types or list(SUBSCRIBABLE_TYPES)
        ids = uow.webhooks.relayed_event_ids(
            client_id,
            internal_types_for(wanted),
            start,
            end,
            first_opens_only=endpoint.opens == "first",
        )
        if len(ids) > REPLAY_MAX_EVENTS:
            raise InvalidRequest(
                f"{len(ids)} events in that range; replay at most {REPLAY_MAX_EVENTS} at once",
                details=[{"events": len(ids), "max": REPLAY_MAX_EVENTS}],
            )
        delivery_ids = uow.webhooks.add_deliveries(
            [(endpoint_id, i) for i in ids], moment, hold_until=moment + QUEUE_HOLD
        )
        replayed = {"start": start.isoformat(), "end": end.isoformat(), "deliveries": len(ids)}
        uow.audit.append(_audit(actor, "webhook.replay", endpoint, None, replayed))
        uow.commit()
    _queue_now(uow, queue, delivery_ids, moment)
    return len(delivery_ids)


def purge_expired(
    uow: UnitOfWork, *, retention: timedelta, limit: int, now: datetime | None = None
) -> int:
    """Events older than ``retention``, with their deliveries and attempts, deleted; how many.

    Bounded to ``limit`` events a call: a tick after a long outage catches
    up over several ticks instead of running past its timeout.
    """
    cutoff = (now or _now()) - retention
    with uow:
        purged = uow.webhooks.purge_events_before(cutoff, limit)
        uow.commit()
    return purged


def _require_enabled(endpoint: Endpoint) -> None:
    if not endpoint.enabled:
        raise InvalidRequest(
            "the endpoint is disabled; enable it first (PATCH with enabled: true)",
            details=[{"disabled_reason": endpoint.disabled_reason}],
        )


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: list[tuple[str, dict[str, Any]]]  # (webhook-id, body)
    next_cursor: str


def feed(
    uow: UnitOfWork,
    client_id: uuid.UUID,
    *,
    after: str | None,
    types: Sequence[str] | None,
    limit: int,
) -> FeedPage:
    """The client's events in feed order after ``after`` (an opaque cursor)."""
    position = 0
    if after:
        if not after.isdigit() or len(after) > 19:
            raise InvalidRequest(
                "after: a cursor from an earlier answer", details=[{"field": "after"}]
            )
        position = int(after)
    wanted = parse_event_types(types) if types else [*MESSAGE_EVENT_TYPES, ENDPOINT_DISABLED]
    assert wanted is not None
    with uow:
        rows = uow.webhooks.feed(client_id, internal_types_for(wanted), position, limit)
    last = rows[-1].feed_seq if rows else position
    return FeedPage(
        [(event_id(row.id), event_body(row)) for row in rows], str(last if last is not None else 0)
    )
