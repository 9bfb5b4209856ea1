"""Token buckets, quota counters and credential versions in Redis.

Each check-and-change is one Lua script, so it is atomic across every API
instance. Time comes from Redis (``TIME``), not from the instances, so their
clock skew cannot bend a bucket. Any Redis failure becomes
``DependencyUnavailable``: the API fails closed, never open.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from redis.commands.core import Script
from redis.exceptions import RedisError

from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.tenancy import (
    Bucket,
    CredentialVersions,
    QuotaCounter,
    QuotaTake,
    RateLimiter,
)
from mailroom.domain.errors import DependencyUnavailable
from mailroom.domain.tenancy import QuotaPeriod, RateDecision

KEY_PREFIX = "mailroom:"

# KEYS: every bucket of the request (global, client, key: any number).
# ARGV: capacity and refill per millisecond of each bucket, in KEYS order,
# then the tokens to take from each (1 a request; issue 17's batches take one
# per item). All or nothing: they are taken from every bucket or from none.
# Returns {allowed, then per bucket: whole tokens left, ms until full, ms
# until it has a token again (0 when it has one)}.
BUCKET_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local levels = {}
local waits = {}
local allowed = 1
local cost = tonumber(ARGV[2 * #KEYS + 1] or '1')
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local level = tonumber(state[1])
  local stamp = tonumber(state[2])
  if level == nil or stamp == nil then
    level = capacity
  else
    level = math.min(capacity, level + math.max(0, now - stamp) * rate)
  end
  levels[i] = level
  waits[i] = 0
  if level < cost then
    allowed = 0
    waits[i] = math.ceil((cost - level) / rate)
  end
end
local answer = {allowed}
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  if allowed == 1 then levels[i] = levels[i] - cost end
  redis.call('HSET', key, 'tokens', tostring(levels[i]), 'ts', now)
  -- Once it would be full again the key may go: a missing bucket is a full one.
  local reset = math.ceil((capacity - levels[i]) / rate)
  redis.call('PEXPIRE', key, reset + 1000)
  answer[#answer + 1] = math.floor(levels[i])
  answer[#answer + 1] = reset
  answer[#answer + 1] = waits[i]
end
return answer
"""

# KEYS[1] the counter; ARGV[1] the limit. {-1, 0} when unset, {0, used} when
# full, {1, used after this take} when taken.
QUOTA_TAKE = """
local used = redis.call('GET', KEYS[1])
if not used then return {-1, 0} end
used = tonumber(used)
if used >= tonumber(ARGV[1]) then return {0, used} end
return {1, redis.call('INCR', KEYS[1])}
"""

QUOTA_GIVE_BACK = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""

# A batch's take (issue 17): ARGV[1] the limit, ARGV[2] how many. {-1, 0}
# when unset, else {how many were counted (as many as fit), used after}.
QUOTA_TAKE_UP_TO = """
local used = redis.call('GET', KEYS[1])
if not used then return {-1, 0} end
used = tonumber(used)
local take = math.min(math.max(tonumber(ARGV[1]) - used, 0), tonumber(ARGV[2]))
if take > 0 then used = redis.call('INCRBY', KEYS[1], take) end
return {take, used}
"""

QUOTA_GIVE_BACK_MANY = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local back = math.min(used, tonumber(ARGV[1]))
if back > 0 then return redis.call('DECRBY', KEYS[1], back) end
return used
"""

# ARGV: expected value ('' for unset), new value, expiry (unix seconds).
QUOTA_REPLACE = """
local current = redis.call('GET', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[3])
  return 1
end
return 0
"""

# Counters outlive their month by this much, so last month can still be
# inspected and reconciled.
QUOTA_RETENTION = timedelta(days=62)


@contextmanager
def _fail_closed(what: str) -> Iterator[None]:
    try:
        yield
    except RedisError as error:
        raise DependencyUnavailable(f"Redis is unavailable: {what}") from error


class _Scripts:
    """Lua scripts registered on the store's client on first use (EVALSHA, EVAL on NOSCRIPT)."""

    def __init__(self, store: RedisStore, source: str) -> None:
        self._store = store
        self._source = source
        self._script: Script | None = None

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        if self._script is None:
            self._script = self._store.client.register_script(self._source)
        return self._script(keys=keys, args=args)


class RedisRateLimiter(RateLimiter):
    def __init__(self, store: RedisStore) -> None:
        self._bucket = _Scripts(store, BUCKET_SCRIPT)

    def take_all(self, buckets: Sequence[Bucket], *, cost: int = 1) -> RateDecision:
        keys = [f"{KEY_PREFIX}rate:{b.name}" for b in buckets]
        args: list[Any] = []
        for b in buckets:
            args += [b.per_minute, repr(b.per_minute / 60_000)]
        args.append(cost)
        with _fail_closed("rate limits cannot be checked"):
            answer = [int(value) for value in self._bucket(keys, args)]
        return tightest(buckets, bool(answer[0]), answer[1:])


def tightest(buckets: Sequence[Bucket], allowed: bool, numbers: Sequence[int]) -> RateDecision:
    """The decision of the bucket that binds: the slowest refusing one, or the emptiest."""
    decisions = [
        RateDecision(
            allowed=allowed,
            limit=bucket.per_minute,
            remaining=max(0, numbers[3 * index]),
            reset_seconds=math.ceil(numbers[3 * index + 1] / 1000),
            retry_after_seconds=0 if allowed else max(1, math.ceil(numbers[3 * index + 2] / 1000)),
            level=bucket.level,
        )
        for index, bucket in enumerate(buckets)
    ]
    if not allowed:
        refusing = [d for i, d in enumerate(decisions) if numbers[3 * i + 2] > 0] or decisions
        return max(refusing, key=lambda d: d.retry_after_seconds)
    return min(decisions, key=lambda d: (d.remaining, d.limit))


class RedisQuotaCounter(QuotaCounter):
    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._take = _Scripts(store, QUOTA_TAKE)
        self._give_back = _Scripts(store, QUOTA_GIVE_BACK)
        self._take_up_to = _Scripts(store, QUOTA_TAKE_UP_TO)
        self._give_back_many = _Scripts(store, QUOTA_GIVE_BACK_MANY)
        self._replace = _Scripts(store, QUOTA_REPLACE)

    @staticmethod
    def _key(client_id: uuid.UUID, period: QuotaPeriod) -> str:
        return f"{KEY_PREFIX}quota:{client_id}:{period.label}"

    @staticmethod
    def _expiry(period: QuotaPeriod) -> int:
        return int((period.end + QUOTA_RETENTION).timestamp())

    def take(self, client_id: uuid.UUID, period: QuotaPeriod, limit: int) -> QuotaTake | None:
        with _fail_closed("quotas cannot be checked"):
            state, used = self._take([self._key(client_id, period)], [limit])
        if int(state) < 0:
            return None
        return QuotaTake(accepted=bool(state), used=int(used))

    def give_back(self, client_id: uuid.UUID, period: QuotaPeriod) -> None:
        with _fail_closed("a quota charge cannot be given back"):
            self._give_back([self._key(client_id, period)], [])

    def take_up_to(
        self, client_id: uuid.UUID, period: QuotaPeriod, limit: int, count: int
    ) -> tuple[int, int] | None:
        with _fail_closed("quotas cannot be checked"):
            taken, used = self._take_up_to([self._key(client_id, period)], [limit, count])
        if int(taken) < 0:
            return None
        return int(taken), int(used)

    def give_back_many(self, client_id: uuid.UUID, period: QuotaPeriod, count: int) -> None:
        if count <= 0:
            return
        with _fail_closed("a quota charge cannot be given back"):
            self._give_back_many([self._key(client_id, period)], [count])

    def seed(self, client_id: uuid.UUID, period: QuotaPeriod, used: int) -> None:
        with _fail_closed("quotas cannot be checked"):
            self._store.client.set(
                self._key(client_id, period), used, nx=True, exat=self._expiry(period)
            )

    def read(self, client_id: uuid.UUID, period: QuotaPeriod) -> int | None:
        with _fail_closed("quotas cannot be read"):
            raw = self._store.client.get(self._key(client_id, period))
        return None if raw is None else int(raw)

    def replace(
        self, client_id: uuid.UUID, period: QuotaPeriod, *, expected: int | None, used: int
    ) -> bool:
        with _fail_closed("quotas cannot be reconciled"):
            done = self._replace(
                [self._key(client_id, period)],
                ["" if expected is None else str(expected), used, self._expiry(period)],
            )
        return bool(done)


class RedisCredentialVersions(CredentialVersions):
    def __init__(self, store: RedisStore) -> None:
        self._store = store

    @staticmethod
    def _key(api_key: str) -> str:
        return f"{KEY_PREFIX}credv:{api_key}"

    def read(self, api_key: str) -> str | None:
        with _fail_closed("credentials cannot be checked"):
            raw = self._store.client.get(self._key(api_key))
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def claim(self, api_key: str) -> str | None:
        version = secrets.token_hex(16)
        with _fail_closed("credentials cannot be checked"):
            # SET NX GET answers the value that was there, or None when it set ours.
            existing = self._store.client.set(self._key(api_key), version, nx=True, get=True)
        return version if existing is None else None

    def bump(self, api_key: str) -> None:
        # Random, not a counter: after Redis loses the key, a counter could come
        # back to a value some instance still has cached.
        with _fail_closed("the change cannot be announced to other instances"):
            self._store.client.set(self._key(api_key), secrets.token_hex(16))
