"""Open and click tracking (issue 21): tracked HTML for the worker, hits for the tracking function.

Every recorded hit is a ``tracking_hits`` row and, but for honeypot hits, an
``opened`` or ``clicked`` row in ``message_events`` (what the outbound
webhooks deliver) with ``machine`` and the signals behind it
(domain/tracking_signals.py). A flood on one token is counted in Redis
beyond ``hits_per_token_minute`` hits a minute, and not written row by row.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Protocol

from mailroom.adapters.db.tracking import (
    Engagement,
    Hit,
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
    TrackingChoice,
    resolve_choice,
    track_html,
)
from mailroom.domain.tracking_signals import MachineSignals, judge_hit

log = logging.getLogger(__name__)
_TOKEN = re.compile(TOKEN_PATTERN)
MAX_USER_AGENT = 512
MAX_IP = 64


class HitLimiter(Protocol):
    def allow(self, token: str, per_minute: int) -> bool:
        """True while the token has had fewer than ``per_minute`` hits this minute."""


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
    store: TrackingStore, config: TrackingConfig, message: Message, rendered: RenderedEmail
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
    policy = LinkPolicy(config.base_url, config.excluded_domains, message.options.unsubscribe_url)
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
        return cls((user_agent or "")[:MAX_USER_AGENT], (ip or "")[:MAX_IP])


def record_open(
    store: TrackingStore | None,
    limiter: HitLimiter | None,
    config: TrackingConfig,
    token: str,
    visitor: Visitor,
) -> bool:
    """Record a pixel fetch; never raises (the pixel answers a GIF whatever happens).

    True if a hit was written.
    """
    if store is None or not _TOKEN.match(token):
        return False
    try:
        if not _allowed(limiter, config, token):
            return False
        target = store.hit(
            token,
            user_agent=visitor.user_agent,
            ip=visitor.ip,
            honeypot_window_seconds=config.honeypot_window_seconds,
            judge=lambda found: (
                _judged(config, found, visitor) if found.kind is LinkKind.OPEN else None
            ),
        )
        return target is not None and target.kind is LinkKind.OPEN
    except Exception:
        log.exception("recording an open failed", extra={"token": token[:32]})
        return False


@dataclass(frozen=True, slots=True)
class ClickAnswer:
    # Where to send the reader; None for the honeypot (an empty page).
    url: str | None


def record_click(
    store: TrackingStore | None,
    limiter: HitLimiter | None,
    config: TrackingConfig,
    token: str,
    visitor: Visitor,
) -> ClickAnswer | None:
    """The stored target of a click token (None: unknown, nothing recorded).

    The lookup's failure raises (there is nowhere to redirect to); a failure
    to record after it is logged and the reader redirected all the same.
    """
    if store is None or not _TOKEN.match(token):
        return None
    allowed = _allowed(limiter, config, token)
    window = config.honeypot_window_seconds
    try:
        target = store.hit(
            token,
            user_agent=visitor.user_agent,
            ip=visitor.ip,
            honeypot_window_seconds=window,
            judge=lambda found: (
                _judged(config, found, visitor)
                if allowed and found.kind is not LinkKind.OPEN
                else None
            ),
        )
    except Exception:
        # Recording failed: the reader is redirected all the same if the link
        # can be read (a database that is down raises again here: 503).
        log.exception("recording a click failed", extra={"token": token})
        target = store.find(
            token, user_agent=visitor.user_agent, ip=visitor.ip, honeypot_window_seconds=window
        )
    if target is None or target.kind is LinkKind.OPEN:
        return None
    return ClickAnswer(target.url if target.kind is LinkKind.CLICK else None)


def _allowed(limiter: HitLimiter | None, config: TrackingConfig, token: str) -> bool:
    if limiter is None:
        return True
    try:
        return limiter.allow(token, config.hits_per_token_minute)
    except Exception:  # noqa: BLE001 - Redis down: record, unlimited
        log.warning("the tracking hit limiter failed; recording without a limit")
        return True


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
