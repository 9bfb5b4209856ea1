"""Open and click tracking (issue 21): tracked HTML for the worker, hits for the tracking function.

Every recorded hit is a ``tracking_hits`` row and, but for honeypot hits, an
``opened`` or ``clicked`` row in ``message_events`` (what the outbound
webhooks deliver) with ``machine`` and the signals behind it
(domain/tracking_signals.py). A flood on one token is counted in Redis
beyond ``hits_per_token_minute`` hits a minute, and not written row by row.

Issue 21 item 3: the tracking function only queues a hit (``HitRecorder``,
one Redis round trip); the tracking consumer (services/tracking_ingest.py)
judges and writes them in batches (``apply_hits``), a few statements per
batch whatever its size.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from mailroom.adapters.db.tracking import (
    Engagement,
    Hit,
    HitContext,
    HitsWritten,
    LinkTarget,
    RecordedHit,
    TokenTarget,
    TrackingStore,
)
from mailroom.domain.model import EventType, Message, RenderedEmail
from mailroom.domain.tracking import (
    NO_TRACKING,
    TOKEN_PATTERN,
    LinkKind,
    LinkPolicy,
    QueuedHit,
    TrackingChoice,
    resolve_choice,
    track_html,
)
from mailroom.domain.tracking_signals import MachineSignals, judge_hit

log = logging.getLogger(__name__)
_TOKEN = re.compile(TOKEN_PATTERN)
MAX_USER_AGENT = 512
MAX_IP = 64


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    """The tracking settings, read once per container (bootstrap builds it)."""

    base_url: str
    default: TrackingChoice = NO_TRACKING
    excluded_domains: frozenset[str] = frozenset()
    signals: MachineSignals = field(default_factory=MachineSignals)
    honeypot_window_seconds: int = 300
    hits_per_token_minute: int = 30


def tracked_email(
    store: TrackingStore,
    config: TrackingConfig,
    message: Message,
    rendered: RenderedEmail,
    *,
    base_url: str | None = None,
) -> RenderedEmail:
    """The worker's one call: ``rendered`` with tracked links and pixel, tokens stored.

    Untouched when the message tracks nothing or no base URL is configured.
    A database error raises: the worker then retries the message, rather
    than send links that would 404.
    """
    if not is_tracked(config, message) or not rendered.html:
        return rendered
    tracking = message.options.tracking
    choice = resolve_choice(None if tracking is None else dict(tracking), config.default)
    # ``base_url``: the client's own tracking host, when it has one (issue 21).
    policy = LinkPolicy(
        base_url or config.base_url, config.excluded_domains, message.options.unsubscribe_url
    )
    tracked = track_html(rendered.html, choice, policy)
    if not tracked.links:
        return rendered
    store.add_links(message.id, tracked.links)
    return RenderedEmail(subject=rendered.subject, html=tracked.html, text=rendered.text)


def is_tracked(config: TrackingConfig, message: Message) -> bool:
    """Whether the worker tracks (or tracked) ``message``: its choice over the defaults."""
    tracking = message.options.tracking
    choice = resolve_choice(None if tracking is None else dict(tracking), config.default)
    return bool(config.base_url) and choice.any


def engagement_of(
    store: TrackingStore | None, config: TrackingConfig, message: Message
) -> Engagement | None:
    """The message's derived opens and clicks; None for a message not tracked."""
    if store is None or not is_tracked(config, message):
        return None
    return store.engagement(message.id)


@dataclass(frozen=True, slots=True)
class Visitor:
    user_agent: str
    ip: str

    @classmethod
    def of(cls, user_agent: str | None, ip: str | None) -> Visitor:
        return cls(_storable(user_agent or "")[:MAX_USER_AGENT], _storable(ip or "")[:MAX_IP])


def _storable(value: str) -> str:
    """``value`` as PostgreSQL text and jsonb can hold it: no NUL, no lone surrogate.

    A header with either would fail the consumer's whole batch, again on
    every redelivery, and take the batch's other hits to the dead-letter queue.
    """
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


class HitQueue(Protocol):
    """Where the tracking function puts hits (adapters/redis_tracking.py)."""

    def push(self, hit: QueuedHit, per_minute: int) -> tuple[bool, bool]:
        """(queued, ring): False when over the per-token limit; ring: wake the consumer."""


class Doorbell(Protocol):
    def ring(self) -> None: ...


@dataclass(slots=True)
class HitRecorder:
    """The tracking function's side: queue a hit, and look a link up.

    One Redis round trip per hit (limit, append, doorbell in one script);
    the click's link is read from PostgreSQL once per container and then
    from ``links`` (a token's row never changes once written).
    """

    store: TrackingStore | None
    queue: HitQueue | None
    doorbell: Doorbell | None
    config: TrackingConfig
    clock: Callable[[], float] = time.time
    links: dict[str, LinkTarget] = field(default_factory=dict)
    max_links: int = 10_000

    def record_open(self, token: str, visitor: Visitor) -> bool:
        """Queue a pixel fetch; never raises (the pixel answers a GIF whatever happens).

        True if the hit was queued. Which message it opened, and whether the
        token is real, the consumer finds out: the pixel's path reads nothing.
        """
        if not _TOKEN.match(token):
            return False
        return self._push(token, LinkKind.OPEN, visitor)

    def record_click(self, token: str, visitor: Visitor) -> ClickAnswer | None:
        """The stored target of a click token (None: unknown, nothing queued).

        The lookup's failure raises (there is nowhere to redirect to); a
        failure to queue the hit is logged and the reader redirected all the same.
        """
        if self.store is None or not _TOKEN.match(token):
            return None
        target = self.links.get(token)
        if target is None:
            target = self.store.link(token)
            if target is None:
                return None
            if len(self.links) >= self.max_links:
                self.links.clear()  # a crude bound: a container's working set refills it
            self.links[token] = target
        if target.kind is LinkKind.OPEN:
            return None
        self._push(token, LinkKind.CLICK, visitor)
        return ClickAnswer(target.url if target.kind is LinkKind.CLICK else None)

    def _push(self, token: str, route: LinkKind, visitor: Visitor) -> bool:
        if self.queue is None:
            return False
        hit = QueuedHit.new(token, route, visitor.user_agent, visitor.ip, self.clock())
        try:
            queued, ring = self.queue.push(hit, self.config.hits_per_token_minute)
        except Exception:
            log.exception("queueing a tracking hit failed", extra={"token": token[:32]})
            return False
        if ring and self.doorbell is not None:
            try:
                self.doorbell.ring()
            except Exception:  # noqa: BLE001 - the consumer's schedule drains it anyway
                log.warning("ringing the tracking consumer failed; its schedule will drain")
        return queued


@dataclass(frozen=True, slots=True)
class ClickAnswer:
    # Where to send the reader; None for the honeypot (an empty page).
    url: str | None


def judge_batch(
    config: TrackingConfig, hits: Sequence[QueuedHit]
) -> Callable[[HitContext], list[tuple[QueuedHit, RecordedHit]]]:
    """What the consumer writes for ``hits``, given what is stored: the batch's judge.

    Hits are judged in the order they came. A hit whose token is unknown, or
    came by the other route (a pixel token fetched as a link), is dropped.
    A click is a machine's when the same agent and address hit the message's
    honeypot within the window, before or after it (stored or in this batch).
    """
    ordered = sorted(hits, key=lambda hit: (hit.at, hit.hit_id))
    window = config.honeypot_window_seconds

    def judge(context: HitContext) -> list[tuple[QueuedHit, RecordedHit]]:
        honeypots = {key: [at.timestamp() for at in ats] for key, ats in context.honeypots.items()}
        for hit in ordered:
            found = context.targets.get(hit.token)
            if found is not None and found.kind is LinkKind.HONEYPOT:
                key = (found.message_id, hit.user_agent, hit.ip)
                honeypots.setdefault(key, []).append(hit.at)
        human = set(context.human)
        judged: list[tuple[QueuedHit, RecordedHit]] = []
        for hit in ordered:
            link = context.targets.get(hit.token)
            if link is None or (link.kind is LinkKind.OPEN) != (hit.route is LinkKind.OPEN):
                continue
            sent_at = context.sent_at.get(link.message_id)
            nearby = any(
                abs(at - hit.at) <= window
                for at in honeypots.get((link.message_id, hit.user_agent, hit.ip), ())
            )
            target = TokenTarget(
                token=link.token,
                message_id=link.message_id,
                kind=link.kind,
                link_index=link.link_index,
                url=link.url,
                sent_at=sent_at,
                now=datetime.fromtimestamp(hit.at, UTC),
                honeypot_nearby=nearby and link.kind is LinkKind.CLICK,
                no_human_hit_yet=(link.message_id, link.kind.value) not in human,
            )
            recorded = _judged(config, target, Visitor(hit.user_agent, hit.ip))
            if not recorded[0].machine and link.kind is not LinkKind.HONEYPOT:
                human.add((link.message_id, link.kind.value))
            judged.append((hit, recorded))
        return judged

    return judge


def apply_hits(
    store: TrackingStore, config: TrackingConfig, hits: Sequence[QueuedHit]
) -> HitsWritten:
    """Judge and write one batch of queued hits in one transaction, each at most once."""
    return store.apply_hits(hits, judge_batch(config, hits), config.honeypot_window_seconds)


def _judged(config: TrackingConfig, target: TokenTarget, visitor: Visitor) -> RecordedHit:
    """The hit to write for ``target``: its machine signals, event type and detail."""
    since = None if target.sent_at is None else (target.now - target.sent_at).total_seconds()
    signals = judge_hit(
        config.signals,
        user_agent=visitor.user_agent,
        ip=visitor.ip,
        seconds_since_send=since,
        honeypot=target.kind is LinkKind.HONEYPOT or target.honeypot_nearby,
    )
    hit = Hit(target, visitor.user_agent, visitor.ip, tuple(signals))
    event_type: str | None
    detail: dict[str, object] = {
        "machine": hit.machine,
        "signals": signals,
        "user_agent": visitor.user_agent,
    }
    if target.kind is LinkKind.OPEN:
        event_type = EventType.OPENED.value
        # The message's first human open, for webhooks that want only those
        # (concurrent first opens may both say so: the counts come from the hits).
        detail["first_open"] = not hit.machine and target.no_human_hit_yet
    elif target.kind is LinkKind.CLICK:
        event_type = EventType.CLICKED.value
        detail.update(link_index=target.link_index, url=target.url)
    else:
        event_type = None  # a honeypot hit is kept, but no one opened or clicked anything
    return hit, event_type, detail
