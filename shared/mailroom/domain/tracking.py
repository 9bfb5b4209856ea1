"""Open and click tracking (issue 21): which links are tracked, and how the HTML is rewritten.

The worker rewrites a tracked message's HTML once, after rendering and before
the MIME is built: each tracked ``<a href="http(s)://...">`` points at
``<base>/c/{token}`` instead, and a 1×1 pixel ``<base>/t/{token}.gif`` is
added before ``</body>``. A token is 128 random bits, stored with the message
id, the link's index and its URL (adapters/db/tracking.py): the redirect
target is read from that row, never from the request, so no tampering with a
token can redirect anywhere else (an unknown token is simply not found).

The HTML is read with the stdlib's ``html.parser`` (a real tokenizer: comments,
``<script>``, attribute quoting and entities are its business, not a regex's).
Only the start tags of rewritten links are written anew; every other byte of
the document is kept as it was.

Left alone: links that are not http(s) (``mailto:``, ``tel:``, relative, ``#``,
``javascript:``); URLs with whitespace or control characters inside (no header
injection through Location); unsubscribe links (Mailroom's ``/u/``, the message's own
``unsubscribe_url``, any URL containing "unsubscribe"); links marked
``data-mr-notrack`` (the marker attribute is removed); excluded domains and
their subdomains; links already pointing at ``<base>/c/``; URLs longer than
``MAX_TRACKED_URL`` characters; URLs ``urllib`` cannot split. The text part is
never rewritten: a reader of plain text sees the real address (an opaque
redirect there reads as phishing and scores as spam), so clicks from text
parts are not counted.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from html import escape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

# A longer URL is left as it is: it would not fit comfortably in a row, and
# links that long are almost always already tracked by someone else.
MAX_TRACKED_URL = 4096
NOTRACK_ATTRIBUTE = "data-mr-notrack"
TOKEN_BYTES = 16
# What a token looks like in a path: urlsafe base64 of 16 bytes, 22 characters.
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{22}$"  # noqa: S105 - a shape, not a secret


class LinkKind(StrEnum):
    OPEN = "open"  # the pixel
    CLICK = "click"  # a rewritten link
    HONEYPOT = "honeypot"  # a hidden link no person can click (services/tracking.py)


@dataclass(frozen=True, slots=True)
class TrackingChoice:
    """What to track for one message; None in a request means "the default"."""

    opens: bool = False
    clicks: bool = False

    @property
    def any(self) -> bool:
        return self.opens or self.clicks


NO_TRACKING = TrackingChoice()


TRACKING_KEYS = ("opens", "clicks")
TrackingPairs = tuple[tuple[str, bool], ...]


def tracking_default(value: Any, where: str) -> TrackingPairs | None:
    """A stored tracking default (a queue's, a template's) as pairs; ValueError if malformed.

    ``{"opens": bool, "clicks": bool}``, either key optional; None or ``{}``: none.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: tracking must be an object with opens and/or clicks")
    pairs = []
    for key, flag in value.items():
        if key not in TRACKING_KEYS:
            raise ValueError(f"{where}: tracking has an unknown field {key!r} (opens, clicks)")
        if not isinstance(flag, bool):
            raise ValueError(f"{where}: tracking.{key} must be true or false")
        pairs.append((key, flag))
    return tuple(sorted(pairs)) or None


def layered(*layers: TrackingPairs | None) -> TrackingPairs | None:
    """Tracking choices stacked, each key of a later layer overriding (both ways) an earlier one.

    The order is queue, template, message (issue 21): the message's own
    ``tracking`` has the last word, then its template's, then its queue's,
    and the service's default (``resolve_choice``) fills what none says.
    """
    merged: dict[str, bool] = {}
    for layer in layers:
        if layer:
            merged.update(layer)
    return tuple(sorted(merged.items())) or None


def resolve_choice(
    requested: dict[str, Any] | None, default: TrackingChoice = NO_TRACKING
) -> TrackingChoice:
    """The message's ``tracking`` object over the default, each key overriding both ways."""
    if not requested:
        return default
    opens = requested.get("opens")
    clicks = requested.get("clicks")
    return TrackingChoice(
        opens=default.opens if opens is None else bool(opens),
        clicks=default.clicks if clicks is None else bool(clicks),
    )


@dataclass(frozen=True, slots=True)
class TrackedLink:
    token: str
    kind: LinkKind
    # The position among the message's tracked links (0, 1, ...); None for
    # the pixel and the honeypot.
    link_index: int | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """Which links are tracked, and where tracked links and pixels point."""

    base_url: str
    excluded_domains: frozenset[str] = frozenset()
    unsubscribe_url: str | None = None

    def tracks(self, url: str) -> bool:
        # A URL with whitespace or control characters inside (entities decode
        # to them: &#13;&#10;) would be a header injection in Location.
        if len(url) > MAX_TRACKED_URL or not url.isprintable() or any(c.isspace() for c in url):
            return False
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").rstrip(".").lower()
        except ValueError:
            return False
        if parts.scheme.lower() not in ("http", "https") or not host:
            return False
        base = self.base_url.rstrip("/")
        if url.startswith(f"{base}/c/") or url.startswith(f"{base}/u/"):
            return False
        if self.unsubscribe_url and url == self.unsubscribe_url:
            return False
        if "unsubscribe" in url.lower():
            return False
        return not any(host == d or host.endswith(f".{d}") for d in self.excluded_domains)


@dataclass(frozen=True, slots=True)
class TrackedHtml:
    html: str
    links: tuple[TrackedLink, ...]


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def track_html(
    html: str,
    choice: TrackingChoice,
    policy: LinkPolicy,
    *,
    token: Callable[[], str] = new_token,
) -> TrackedHtml:
    """``html`` with tracked links and the pixel, and the tokens to store."""
    if not choice.any or not html:
        return TrackedHtml(html, ())
    base = policy.base_url.rstrip("/")
    scanner = _AnchorScanner(html)
    edits: list[tuple[int, int, str]] = []
    links: list[TrackedLink] = []
    for anchor in scanner.anchors:
        attrs = anchor.attrs
        marked = any(name == NOTRACK_ATTRIBUTE for name, _ in attrs)
        href = next((value for name, value in attrs if name == "href"), None)
        if marked:
            kept = [(n, v) for n, v in attrs if n != NOTRACK_ATTRIBUTE]
            edits.append((anchor.start, anchor.end, _start_tag(anchor, kept)))
            continue
        if not choice.clicks or href is None or not policy.tracks(href.strip()):
            continue
        link = TrackedLink(token(), LinkKind.CLICK, len(links), href.strip())
        links.append(link)
        rewritten = [(n, f"{base}/c/{link.token}" if n == "href" else v) for n, v in attrs]
        edits.append((anchor.start, anchor.end, _start_tag(anchor, rewritten)))
    extra: list[str] = []
    if choice.clicks and links:
        # No person sees or clicks this one; a scanner following every link does.
        honeypot = TrackedLink(token(), LinkKind.HONEYPOT)
        links.append(honeypot)
        extra.append(
            f'<a href="{base}/c/{honeypot.token}" style="display:none" '
            'aria-hidden="true" tabindex="-1"></a>'
        )
    if choice.opens:
        pixel = TrackedLink(token(), LinkKind.OPEN)
        links.append(pixel)
        extra.append(
            f'<img src="{base}/t/{pixel.token}.gif" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0">'
        )
    if extra:
        at = scanner.body_end if scanner.body_end is not None else len(html)
        edits.append((at, at, "".join(extra)))
    return TrackedHtml(_apply(html, edits), tuple(links))


def _apply(html: str, edits: Sequence[tuple[int, int, str]]) -> str:
    out: list[str] = []
    position = 0
    for start, end, replacement in sorted(edits, key=lambda edit: (edit[0], edit[1])):
        out.append(html[position:start])
        out.append(replacement)
        position = end
    out.append(html[position:])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Anchor:
    start: int
    end: int
    attrs: list[tuple[str, str | None]]
    self_closing: bool


def _start_tag(anchor: _Anchor, attrs: Sequence[tuple[str, str | None]]) -> str:
    parts = ["<a"]
    for name, value in attrs:
        parts.append(f" {name}" if value is None else f' {name}="{escape(value, quote=True)}"')
    parts.append(" />" if anchor.self_closing else ">")
    return "".join(parts)


class _AnchorScanner(HTMLParser):
    """The ``<a>`` start tags of a document with their offsets, and where ``</body>`` is."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[_Anchor] = []
        self.body_end: int | None = None
        # getpos() answers (line, column); html.parser counts lines by "\n".
        self._line_starts = [0, *(match.end() for match in re.finditer("\n", html))]
        self.feed(html)
        self.close()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def _anchor(self, attrs: list[tuple[str, str | None]], self_closing: bool) -> None:
        raw = self.get_starttag_text() or ""
        start = self._offset()
        self.anchors.append(_Anchor(start, start + len(raw), attrs, self_closing))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._anchor(attrs, False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._anchor(attrs, True)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()


# --- hits on their way to PostgreSQL (issue 21 item 3) -----------------------


@dataclass(frozen=True, slots=True)
class QueuedHit:
    """A pixel fetch or a link click as the tracking function queues it.

    Nothing is judged yet: the consumer looks the token up, judges the hit
    (domain/tracking_signals.py) and writes it. ``hit_id`` is random and
    given once, so a hit delivered twice is written once; ``at`` is when the
    request came (the "too soon after the send" signal reads it, not the
    time the consumer ran).
    """

    hit_id: str
    token: str
    # The route it came by: a pixel's token counts only as an open, a link's
    # only as a click (or a honeypot).
    route: LinkKind
    user_agent: str
    ip: str
    at: float  # seconds since the epoch

    @classmethod
    def new(cls, token: str, route: LinkKind, user_agent: str, ip: str, at: float) -> QueuedHit:
        return cls(secrets.token_hex(16), token, route, user_agent, ip, at)

    def encode(self) -> str:
        return json.dumps(
            [self.hit_id, self.token, self.route.value, self.user_agent, self.ip, self.at]
        )

    @classmethod
    def decode(cls, raw: str | bytes) -> QueuedHit:
        """The hit ``encode`` wrote; ValueError for anything else."""
        try:
            hit_id, token, route, user_agent, ip, at = json.loads(raw)
            hit = cls(str(hit_id), str(token), LinkKind(route), str(user_agent), str(ip), float(at))
        except (TypeError, ValueError) as error:
            raise ValueError(f"not a queued tracking hit: {error}") from error
        if not re.fullmatch(r"[0-9a-f]{32}", hit.hit_id) or hit.route is LinkKind.HONEYPOT:
            raise ValueError("not a queued tracking hit")
        return hit
