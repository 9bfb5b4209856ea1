"""The tracking hit queue in Redis (issue 21): the per-token limit, the stream, the doorbell.

Why a Redis stream and not SQS for the hit itself (docs/architecture.md,
"Tracking", has the long form): the tracking function already makes one
Redis round trip per hit for the per-token limit, and the limit, the append
and the doorbell below fit in that same round trip (one Lua script), about
0.1 ms; an SQS SendMessage is an HTTPS request of its own, 5-10 ms in a
region and 11 ms p50 / 29 ms p99 against the local runner's moto here, more
than the pixel's whole 5 ms budget. SQS still wakes the consumer: the first
hit after the consumer went quiet rings the doorbell (one SendMessage, at
most one per drain, not one per hit), and SQS then gives the consumer its
retries, its concurrency and its dead-letter queue as for the other
SQS-fed functions.

Keys: ``mailroom:tracking:hits`` (the stream, consumer group ``ingest``,
capped near ``max_length`` entries), ``mailroom:tracking:doorbell`` (set
while a drain is due or running), and per token
``mailroom:tracking:hits:{token}:{minute}`` (hits this minute) and
``mailroom:tracking:over:{token}`` (hits beyond the limit, a day).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from mailroom.adapters.redis_store import RedisStore
from mailroom.domain.tracking import QueuedHit

KEY_PREFIX = "mailroom:tracking"
STREAM = f"{KEY_PREFIX}:hits"
GROUP = "ingest"
DOORBELL = f"{KEY_PREFIX}:doorbell"

# KEYS: the token's minute counter, its over counter, the stream, the doorbell.
# ARGV: the limit, the stream's cap, the doorbell's lifetime (ms), the hit.
# Returns 0: over the limit (only counted); 1: queued; 2: queued, and the
# doorbell was quiet: the caller rings it.
_PUSH = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], 120) end
if count > tonumber(ARGV[1]) then
    redis.call('INCR', KEYS[2])
    redis.call('EXPIRE', KEYS[2], 86400)
    return 0
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'h', ARGV[4])
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[3]) then return 2 end
return 1
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry in a consumer's hands: its id, its body, how often delivered."""

    entry_id: str
    body: bytes
    deliveries: int = 1


class RedisHitQueue:
    """Both ends of the stream: ``push`` for the tracking function, the rest for the consumer."""

    def __init__(
        self,
        store: RedisStore,
        *,
        max_length: int = 1_000_000,
        doorbell_seconds: int = 60,
    ) -> None:
        self._store = store
        self._max_length = max_length
        # A drain that died without silencing the doorbell holds it this long at most.
        self._doorbell_ms = doorbell_seconds * 1000
        self._script: Any = None
        self._group_ready = False

    # --- the tracking function ------------------------------------------------

    def push(self, hit: QueuedHit, per_minute: int) -> tuple[bool, bool]:
        """(queued, ring): queued False when the token is over its limit this minute."""
        if self._script is None:
            self._script = self._store.client.register_script(_PUSH)
        answer = int(
            self._script(
                keys=[
                    f"{KEY_PREFIX}:hits:{hit.token}:{int(time.time() // 60)}",
                    f"{KEY_PREFIX}:over:{hit.token}",
                    STREAM,
                    DOORBELL,
                ],
                args=[per_minute, self._max_length, self._doorbell_ms, hit.encode()],
            )
        )
        return answer > 0, answer == 2

    # --- the consumer ---------------------------------------------------------

    def _group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the stream's start: hits queued before the group existed count too.
            self._store.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    def read(self, consumer: str, count: int) -> list[Entry]:
        """New entries for ``consumer`` (pending on it until ``ack``); no wait."""
        self._group()
        client: Any = self._store.client
        answer = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
        return [
            Entry(_text(entry_id), fields[b"h"])
            for _, entries in answer or []
            for entry_id, fields in entries
            if fields
        ]

    def reclaim(self, consumer: str, min_idle_seconds: float, count: int) -> list[Entry]:
        """Entries another consumer took and left unacknowledged this long (it died)."""
        self._group()
        client: Any = self._store.client
        answer = client.xautoclaim(
            STREAM, GROUP, consumer, int(min_idle_seconds * 1000), start_id="0-0", count=count
        )
        claimed = [(entry_id, fields) for entry_id, fields in answer[1] if fields]
        if not claimed:
            return []
        pending = client.xpending_range(
            STREAM,
            GROUP,
            min=claimed[0][0],
            max=claimed[-1][0],
            count=count * 2,
            consumername=consumer,
        )
        deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [
            Entry(_text(entry_id), fields[b"h"], deliveries.get(_text(entry_id), 1))
            for entry_id, fields in claimed
        ]

    def ack(self, entry_ids: Sequence[str]) -> None:
        """Done with these: acknowledged and deleted (the stream holds only what is due)."""
        if not entry_ids:
            return
        pipeline = self._store.client.pipeline(transaction=False)
        pipeline.xack(STREAM, GROUP, *entry_ids)
        pipeline.xdel(STREAM, *entry_ids)
        pipeline.execute()

    def silence(self) -> None:
        """The consumer found the stream empty: the next hit rings the doorbell again."""
        self._store.client.delete(DOORBELL)

    def backlog(self) -> int:
        return int(self._store.client.xlen(STREAM))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
