"""Tracking tokens and hits in PostgreSQL (issue 21).

Straight SQL over the engine rather than the unit of work. The tracking
function only reads a link's row (the click's redirect); hits reach
PostgreSQL through the hit queue and the consumer, which writes a whole
batch of them in a few statements (``apply_hits``, issue 21 item 3).
"""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, text

from mailroom.adapters.db.array_literals import text_array, uuid_array
from mailroom.adapters.db.unit_of_work import Database
from mailroom.domain.tracking import LinkKind, QueuedHit, TrackedLink


@dataclass(frozen=True, slots=True)
class TokenTarget:
    """What a token stands for, read by the token alone."""

    token: str
    message_id: uuid.UUID
    kind: LinkKind
    link_index: int | None
    url: str | None
    sent_at: datetime | None
    now: datetime
    # A honeypot hit by the same user agent and address within the window.
    honeypot_nearby: bool
    # No person has opened (for a pixel) or clicked (a link) this message before.
    no_human_hit_yet: bool = False


@dataclass(frozen=True, slots=True)
class Engagement:
    """A message's opens and clicks, derived from its hits."""

    opens: int = 0
    machine_opens: int = 0
    # Distinct (user agent, address) pairs among the human opens.
    unique_opens: int = 0
    first_open_at: datetime | None = None
    clicks: int = 0
    machine_clicks: int = 0
    # Distinct links clicked by people.
    unique_clicks: int = 0
    first_click_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    target: TokenTarget
    user_agent: str
    ip: str
    signals: tuple[str, ...]

    @property
    def machine(self) -> bool:
        return bool(self.signals)


# A hit to write: the hit, its event type (None: no event) and the event's detail.
RecordedHit = tuple[Hit, str | None, dict[str, object]]


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """A token's row: what the click redirect needs, and nothing else."""

    token: str
    message_id: uuid.UUID
    kind: LinkKind
    link_index: int | None
    url: str | None


@dataclass(frozen=True, slots=True)
class HitContext:
    """What judging a batch of queued hits needs, read in one transaction."""

    targets: dict[str, LinkTarget]
    sent_at: dict[uuid.UUID, datetime | None]
    # Stored honeypot hits by (message, user agent, address): when.
    honeypots: dict[tuple[uuid.UUID, str, str], list[datetime]]
    # (message, kind) pairs with a human hit stored already.
    human: set[tuple[uuid.UUID, str]]


@dataclass(frozen=True, slots=True)
class HitsWritten:
    hits: int = 0  # rows new to tracking_hits (a redelivered hit is not)
    events: int = 0  # opened and clicked events written


# Judges a batch in context: each queued hit to write, with what it is.
BatchJudge = Callable[[HitContext], Sequence[tuple[QueuedHit, RecordedHit]]]


class TrackingStore(abc.ABC):
    @abc.abstractmethod
    def add_links(self, message_id: uuid.UUID, links: Sequence[TrackedLink]) -> None: ...

    @abc.abstractmethod
    def link(self, token: str) -> LinkTarget | None:
        """The token's row (the click's redirect); None for an unknown token."""

    @abc.abstractmethod
    def apply_hits(
        self, hits: Sequence[QueuedHit], judge: BatchJudge, honeypot_window_seconds: int
    ) -> HitsWritten:
        """Write what ``judge`` makes of ``hits`` in one transaction, each hit at most once.

        A honeypot hit among them flags the same agent's and address's clicks
        on the message within the window, before and after it.
        """

    @abc.abstractmethod
    def engagement(self, message_id: uuid.UUID) -> Engagement: ...


_INSERT_LINKS = text(
    "INSERT INTO tracking_links (token, message_id, kind, link_index, url) "
    "VALUES (:token, :message_id, :kind, :link_index, :url)"
)
_LINK = text(
    "SELECT token, message_id, kind, link_index, url FROM tracking_links WHERE token = :token"
)
# A batch's context: its tokens' rows and their messages' send times ...
_TARGETS = text(
    """
    SELECT l.token, l.message_id, l.kind, l.link_index, l.url, m.sent_at
    FROM tracking_links l JOIN messages m ON m.id = l.message_id
    WHERE l.token = ANY(CAST(:tokens AS text[]))
    """
)
# ... the honeypot hits near it and whether a person has opened or clicked yet.
_CONTEXT = text(
    """
    SELECT message_id, kind, user_agent, ip, at FROM tracking_hits
    WHERE message_id = ANY(CAST(:ids AS uuid[])) AND kind = 'honeypot'
      AND at > CAST(:since AS timestamptz)
    UNION ALL
    SELECT DISTINCT message_id, kind, NULL, NULL, CAST(NULL AS timestamptz) FROM tracking_hits
    WHERE message_id = ANY(CAST(:ids AS uuid[])) AND kind <> 'honeypot' AND NOT machine
    """
)
# The hits and their events in one statement: a hit already written (the
# same hit_id: a redelivery, another consumer) inserts nothing, and its
# event is not written again. Rows in hit_id order: concurrent consumers
# with overlapping batches lock in the same order and wait, not deadlock.
_WRITE_HITS = text(
    """
    WITH batch AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
            hit_id text, token text, message_id uuid, kind text, link_index int,
            at timestamptz, user_agent text, ip text, machine boolean, signals jsonb,
            event_type text, detail jsonb, position int)
    ), written AS (
        INSERT INTO tracking_hits
            (hit_id, token, message_id, kind, link_index, at, user_agent, ip, machine, signals)
        SELECT hit_id, token, message_id, kind, link_index, at, user_agent, ip, machine, signals
        FROM batch ORDER BY hit_id
        ON CONFLICT (hit_id) WHERE hit_id IS NOT NULL DO NOTHING
        RETURNING hit_id
    ), events AS (
        INSERT INTO message_events (message_id, type, detail)
        SELECT b.message_id, b.event_type, b.detail
        FROM batch b JOIN written w ON w.hit_id = b.hit_id
        WHERE b.event_type IS NOT NULL
        ORDER BY b.position
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM events)
    """
)
# The batch's honeypot hits: the same agent's and address's clicks on the
# message within the window, before and after, were a scanner's too (their
# events may be out already; the counts derived from the hits are right).
_FLAG_AROUND = text(
    """
    UPDATE tracking_hits AS h
    SET machine = true, signals = h.signals || '["honeypot"]'::jsonb
    FROM unnest(CAST(:ids AS uuid[]), CAST(:agents AS text[]), CAST(:ips AS text[]),
                CAST(:ats AS timestamptz[])) AS p(message_id, user_agent, ip, at)
    WHERE h.message_id = p.message_id AND h.kind = 'click' AND h.user_agent = p.user_agent
      AND h.ip = p.ip AND h.at BETWEEN p.at - make_interval(secs => :window)
                                   AND p.at + make_interval(secs => :window)
      AND NOT h.signals ? 'honeypot'
    """
)
_ENGAGEMENT = text(
    """
    SELECT
        count(*) FILTER (WHERE kind = 'open'),
        count(*) FILTER (WHERE kind = 'open' AND machine),
        count(DISTINCT (user_agent, ip)) FILTER (WHERE kind = 'open' AND NOT machine),
        min(at) FILTER (WHERE kind = 'open' AND NOT machine),
        count(*) FILTER (WHERE kind = 'click'),
        count(*) FILTER (WHERE kind = 'click' AND machine),
        count(DISTINCT link_index) FILTER (WHERE kind = 'click' AND NOT machine),
        min(at) FILTER (WHERE kind = 'click' AND NOT machine)
    FROM tracking_hits WHERE message_id = :message_id
    """
)


class SqlTrackingStore(TrackingStore):
    def __init__(self, database: Database) -> None:
        self._database = database

    def add_links(self, message_id: uuid.UUID, links: Sequence[TrackedLink]) -> None:
        if not links:
            return
        rows = [
            {
                "token": link.token,
                "message_id": message_id,
                "kind": link.kind.value,
                "link_index": link.link_index,
                "url": link.url,
            }
            for link in links
        ]
        with self._database.engine.begin() as connection:
            connection.execute(_INSERT_LINKS, rows)

    def link(self, token: str) -> LinkTarget | None:
        with self._database.engine.connect() as connection:
            row = connection.execute(_LINK, {"token": token}).first()
            connection.rollback()
        return None if row is None else _link_of(row)

    def apply_hits(
        self, hits: Sequence[QueuedHit], judge: BatchJudge, honeypot_window_seconds: int
    ) -> HitsWritten:
        if not hits:
            return HitsWritten()
        with self._database.engine.begin() as connection:
            context = _context(connection, hits, honeypot_window_seconds)
            judged = judge(context)
            if not judged:
                return HitsWritten()
            rows = [_hit_row(queued, recorded, n) for n, (queued, recorded) in enumerate(judged)]
            written, events = connection.execute(
                _WRITE_HITS, {"rows": json.dumps(rows, default=str)}
            ).one()
            honeypots = [
                (queued, recorded[0])
                for queued, recorded in judged
                if recorded[0].target.kind is LinkKind.HONEYPOT
            ]
            if honeypots:
                connection.execute(
                    _FLAG_AROUND,
                    {
                        "ids": uuid_array(hit.target.message_id for _, hit in honeypots),
                        "agents": text_array(hit.user_agent for _, hit in honeypots),
                        "ips": text_array(hit.ip for _, hit in honeypots),
                        "ats": text_array(_timestamp(q.at).isoformat() for q, _ in honeypots),
                        "window": honeypot_window_seconds,
                    },
                )
        return HitsWritten(int(written), int(events))

    def engagement(self, message_id: uuid.UUID) -> Engagement:
        with self._database.engine.begin() as connection:
            row = connection.execute(_ENGAGEMENT, {"message_id": message_id}).one()
        return Engagement(*row)


def _timestamp(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _link_of(row: Any) -> LinkTarget:
    return LinkTarget(
        token=row.token,
        message_id=row.message_id,
        kind=LinkKind(row.kind),
        link_index=row.link_index,
        url=row.url,
    )


def _context(connection: Connection, hits: Sequence[QueuedHit], window: int) -> HitContext:
    tokens = sorted({hit.token for hit in hits})
    targets: dict[str, LinkTarget] = {}
    sent_at: dict[uuid.UUID, datetime | None] = {}
    for row in connection.execute(_TARGETS, {"tokens": text_array(tokens)}):
        targets[row.token] = _link_of(row)
        sent_at[row.message_id] = row.sent_at
    honeypots: dict[tuple[uuid.UUID, str, str], list[datetime]] = {}
    human: set[tuple[uuid.UUID, str]] = set()
    if sent_at:
        since = _timestamp(min(hit.at for hit in hits) - window)
        rows = connection.execute(
            _CONTEXT, {"ids": uuid_array(sorted(sent_at)), "since": since.isoformat()}
        )
        for message_id, kind, user_agent, ip, at in rows:
            if kind == LinkKind.HONEYPOT.value:
                honeypots.setdefault((message_id, user_agent, ip), []).append(at)
            else:
                human.add((message_id, kind))
    return HitContext(targets, sent_at, honeypots, human)


def _hit_row(queued: QueuedHit, recorded: RecordedHit, position: int) -> dict[str, Any]:
    hit, event_type, detail = recorded
    target = hit.target
    return {
        "hit_id": queued.hit_id,
        "token": target.token,
        "message_id": str(target.message_id),
        "kind": target.kind.value,
        "link_index": target.link_index,
        "at": _timestamp(queued.at).isoformat(),
        "user_agent": hit.user_agent,
        "ip": hit.ip,
        "machine": hit.machine,
        "signals": list(hit.signals),
        "event_type": event_type,
        "detail": detail,
        "position": position,
    }
