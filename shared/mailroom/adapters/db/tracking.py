"""Tracking tokens and hits in PostgreSQL (issue 21).

Straight SQL over the engine rather than the unit of work: the pixel's path
is one lookup and one write, and must stay a few milliseconds.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from mailroom.adapters.db.unit_of_work import Database
from mailroom.domain.tracking import LinkKind, TrackedLink


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


class TrackingStore(abc.ABC):
    @abc.abstractmethod
    def add_links(self, message_id: uuid.UUID, links: Sequence[TrackedLink]) -> None: ...

    @abc.abstractmethod
    def find(
        self, token: str, *, user_agent: str, ip: str, honeypot_window_seconds: int
    ) -> TokenTarget | None: ...

    @abc.abstractmethod
    def record(
        self, hit: Hit, event_type: str | None, detail: dict[str, object], window_seconds: int
    ) -> None:
        """The hit, and its event (None: no event); a honeypot hit flags the clicks around it."""

    @abc.abstractmethod
    def engagement(self, message_id: uuid.UUID) -> Engagement: ...

    def hit(
        self,
        token: str,
        *,
        user_agent: str,
        ip: str,
        honeypot_window_seconds: int,
        judge: Callable[[TokenTarget], RecordedHit | None],
    ) -> TokenTarget | None:
        """``find`` then ``record`` what ``judge`` makes of the target (None: nothing).

        PostgreSQL does both in one transaction (two round trips fewer on the
        pixel's path); this default is the two calls.
        """
        target = self.find(
            token, user_agent=user_agent, ip=ip, honeypot_window_seconds=honeypot_window_seconds
        )
        if target is not None:
            recorded = judge(target)
            if recorded is not None:
                self.record(*recorded, honeypot_window_seconds)
        return target


_INSERT_LINKS = text(
    "INSERT INTO tracking_links (token, message_id, kind, link_index, url) "
    "VALUES (:token, :message_id, :kind, :link_index, :url)"
)
_FIND = text(
    """
    SELECT l.token, l.message_id, l.kind, l.link_index, l.url, m.sent_at, now() AS now,
           EXISTS (
               SELECT 1 FROM tracking_hits h
               WHERE h.message_id = l.message_id AND h.kind = 'honeypot'
                 AND h.user_agent = :user_agent AND h.ip = :ip
                 AND h.at > now() - make_interval(secs => :window)
           ) AS honeypot_nearby,
           NOT EXISTS (
               SELECT 1 FROM tracking_hits h
               WHERE h.message_id = l.message_id AND h.kind = l.kind AND NOT h.machine
           ) AS no_human_hit_yet
    FROM tracking_links l JOIN messages m ON m.id = l.message_id
    WHERE l.token = :token
    """
)
# The hit and its event in one statement: one round trip on the hot path.
_RECORD = text(
    """
    WITH hit AS (
        INSERT INTO tracking_hits
            (token, message_id, kind, link_index, user_agent, ip, machine, signals)
        VALUES (:token, :message_id, :kind, :link_index, :user_agent, :ip, :machine, :signals)
        RETURNING message_id
    )
    INSERT INTO message_events (message_id, type, detail)
    SELECT message_id, CAST(:event_type AS text), :detail FROM hit
    WHERE CAST(:event_type AS text) IS NOT NULL
    """
).bindparams(bindparam("signals", type_=JSONB), bindparam("detail", type_=JSONB))
# A honeypot hit: the same agent's and address's clicks on the message within
# the window were a scanner's too (their events are out already; the counts
# derived from the hits are right).
_FLAG_AROUND = text(
    """
    UPDATE tracking_hits
    SET machine = true, signals = signals || '["honeypot"]'::jsonb
    WHERE message_id = :message_id AND kind = 'click' AND user_agent = :user_agent
      AND ip = :ip AND at > now() - make_interval(secs => :window)
      AND NOT signals ? 'honeypot'
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

    def find(
        self, token: str, *, user_agent: str, ip: str, honeypot_window_seconds: int
    ) -> TokenTarget | None:
        with self._database.engine.begin() as connection:
            row = connection.execute(
                _FIND,
                {
                    "token": token,
                    "user_agent": user_agent,
                    "ip": ip,
                    "window": honeypot_window_seconds,
                },
            ).first()
        return None if row is None else _target_of(row)

    def hit(
        self,
        token: str,
        *,
        user_agent: str,
        ip: str,
        honeypot_window_seconds: int,
        judge: Callable[[TokenTarget], RecordedHit | None],
    ) -> TokenTarget | None:
        with self._database.engine.begin() as connection:
            row = connection.execute(
                _FIND,
                {
                    "token": token,
                    "user_agent": user_agent,
                    "ip": ip,
                    "window": honeypot_window_seconds,
                },
            ).first()
            if row is None:
                return None
            target = _target_of(row)
            recorded = judge(target)
            if recorded is not None:
                _write(connection, *recorded, honeypot_window_seconds)
        return target

    def record(
        self, hit: Hit, event_type: str | None, detail: dict[str, object], window_seconds: int
    ) -> None:
        with self._database.engine.begin() as connection:
            _write(connection, hit, event_type, detail, window_seconds)

    def engagement(self, message_id: uuid.UUID) -> Engagement:
        with self._database.engine.begin() as connection:
            row = connection.execute(_ENGAGEMENT, {"message_id": message_id}).one()
        return Engagement(*row)


def _target_of(row: Any) -> TokenTarget:
    return TokenTarget(
        token=row.token,
        message_id=row.message_id,
        kind=LinkKind(row.kind),
        link_index=row.link_index,
        url=row.url,
        sent_at=row.sent_at,
        now=row.now,
        honeypot_nearby=bool(row.honeypot_nearby),
        no_human_hit_yet=bool(row.no_human_hit_yet),
    )


def _write(
    connection: Connection,
    hit: Hit,
    event_type: str | None,
    detail: dict[str, object],
    window_seconds: int,
) -> None:
    target = hit.target
    connection.execute(
        _RECORD,
        {
            "token": target.token,
            "message_id": target.message_id,
            "kind": target.kind.value,
            "link_index": target.link_index,
            "user_agent": hit.user_agent,
            "ip": hit.ip,
            "machine": hit.machine,
            "signals": list(hit.signals),
            "event_type": event_type,
            "detail": detail,
        },
    )
    if target.kind is LinkKind.HONEYPOT:
        connection.execute(
            _FLAG_AROUND,
            {
                "message_id": target.message_id,
                "user_agent": hit.user_agent,
                "ip": hit.ip,
                "window": window_seconds,
            },
        )
