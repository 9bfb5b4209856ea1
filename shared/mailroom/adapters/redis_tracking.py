"""The per-token limit of recorded tracking hits, in Redis (issue 21)."""

from __future__ import annotations

import time

from mailroom.adapters.redis_store import RedisStore

KEY_PREFIX = "mailroom:tracking"


class RedisHitLimiter:
    """A fixed one-minute window per token; hits beyond it are only counted.

    ``mailroom:tracking:over:{token}`` holds how many were not recorded (a
    day), so a flood is visible without costing a row per hit.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def allow(self, token: str, per_minute: int) -> bool:
        minute = int(time.time() // 60)
        key = f"{KEY_PREFIX}:hits:{token}:{minute}"
        pipeline = self._store.client.pipeline(transaction=False)
        pipeline.incr(key)
        pipeline.expire(key, 120)
        count, _ = pipeline.execute()
        if int(count) <= per_minute:
            return True
        over = f"{KEY_PREFIX}:over:{token}"
        pipeline = self._store.client.pipeline(transaction=False)
        pipeline.incr(over)
        pipeline.expire(over, 86_400)
        pipeline.execute()
        return False
