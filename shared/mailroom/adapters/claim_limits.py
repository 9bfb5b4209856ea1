"""Send-rate buckets the worker takes from at claim time (issue 20), in Redis.

Unlike the API's buckets (adapters/redis_tenancy.py) a claim takes as many
tokens as it can, up to what the batch wants, and learns when the next one
comes: the rest of the batch is put back with that delay, never slept on.
Time comes from Redis ``TIME`` unless a clock is injected (tests drive a
minute in a moment that way).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from mailroom.adapters.redis_store import RedisStore
from mailroom.domain.errors import DependencyUnavailable
from mailroom.domain.queues import BucketGrant

KEY_PREFIX = "mailroom:claim-rate:"

# KEYS: the buckets. ARGV[1]: now in ms ('' for Redis TIME), ARGV[2]: tokens
# wanted, then per bucket its capacity and refill per ms. Takes the same
# number (as many as every bucket has, up to the wanted) from each bucket.
# Returns {granted, ms until each bucket has a whole token again}.
TAKE_UP_TO_SCRIPT = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local want = tonumber(ARGV[2])
local levels = {}
local granted = want
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i + 1])
  local rate = tonumber(ARGV[2 * i + 2])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local level = tonumber(state[1])
  local stamp = tonumber(state[2])
  if level == nil or stamp == nil then
    level = capacity
  else
    level = math.min(capacity, level + math.max(0, now - stamp) * rate)
  end
  levels[i] = level
  granted = math.min(granted, math.floor(level))
end
if granted < 0 then granted = 0 end
local wait = 0
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i + 1])
  local rate = tonumber(ARGV[2 * i + 2])
  local level = levels[i] - granted
  redis.call('HSET', key, 'tokens', tostring(level), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil((capacity - level) / rate) + 1000)
  if level < 1 then wait = math.max(wait, math.ceil((1 - level) / rate)) end
end
return {granted, wait}
"""


@dataclass(frozen=True, slots=True)
class SendBucket:
    """One per-minute send limit: a queue's or a client's."""

    name: str
    per_minute: int


class ClaimRateLimiter(abc.ABC):
    @abc.abstractmethod
    def take_up_to(self, buckets: Sequence[SendBucket], wanted: int) -> BucketGrant:
        """Take up to ``wanted`` tokens from every bucket alike; how many, and the next's wait."""


class RedisClaimRateLimiter(ClaimRateLimiter):
    def __init__(self, store: RedisStore, clock: Callable[[], float] | None = None) -> None:
        self._store = store
        # Seconds since the epoch; None: Redis's own clock (every worker agrees).
        self._clock = clock
        self._script: Any = None

    def take_up_to(self, buckets: Sequence[SendBucket], wanted: int) -> BucketGrant:
        if not buckets or wanted <= 0:
            return BucketGrant(max(wanted, 0), 0.0)
        args: list[Any] = ["" if self._clock is None else int(self._clock() * 1000), wanted]
        for bucket in buckets:
            args += [bucket.per_minute, repr(bucket.per_minute / 60_000)]
        try:
            if self._script is None:
                self._script = self._store.client.register_script(TAKE_UP_TO_SCRIPT)
            granted, wait_ms = self._script(
                keys=[f"{KEY_PREFIX}{bucket.name}" for bucket in buckets], args=args
            )
        except RedisError as error:
            raise DependencyUnavailable(
                "Redis is unavailable: send rates cannot be checked"
            ) from error
        return BucketGrant(int(granted), int(wait_ms) / 1000)
