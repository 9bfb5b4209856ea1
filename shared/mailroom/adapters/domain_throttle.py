"""Per-recipient-domain throttling state in Redis, shared by every worker (issue 20, item 5).

One hash per (sender, domain group) holds the AIMD rate and a token bucket
of that rate: ``mailroom:throttle:<sender>:<group>`` with ``rate`` (per
minute, as AIMD left it), ``tokens``, ``ts`` (last refill), ``adj`` (last
additive step) and ``cut`` (last decrease). The bucket holds five seconds of
the current rate (at least one message): mail is spread over the minute, as
receivers prefer, and no 60 s window sends more than the rate plus that
burst. Each check is one EVALSHA: refill, recover, take or refuse, count the
warm-up day.

Warm-up counts per From domain and group and UTC day:
``mailroom:warmup:<from domain>:<group>:<day>``, with the domain's first
day at ``mailroom:warmup-first:<from domain>``.

Redis trouble fails open (the message is sent, and the error logged):
throttling is a courtesy to the receivers, and stopping every client's
mail because the courtesy's bookkeeping is down would be worse.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import Script
from redis.exceptions import RedisError

from mailroom.adapters.redis_store import RedisStore
from mailroom.domain.throttling import DomainGroup, ThrottleDecision, ThrottlePolicy

log = logging.getLogger(__name__)
Clock = Callable[[], float]
KEY_PREFIX = "mailroom:"
DAY_SECONDS = 86_400
# A delay longer than this is checked again then (SQS holds a record 12 h at most).
MAX_DELAY_SECONDS = 3_600
_ALLOWED = ThrottleDecision(True)

TAKE_SCRIPT = """
local now = tonumber(ARGV[1])
local ceiling = tonumber(ARGV[2])
local step = tonumber(ARGV[3])
local wstart = tonumber(ARGV[4])
local wtarget = tonumber(ARGV[5])
local today = tonumber(ARGV[6])
local to_midnight = tonumber(ARGV[7])
local cap = -1
if wstart > 0 then
  local first = tonumber(redis.call('GET', KEYS[2]))
  if not first then
    first = today
    redis.call('SET', KEYS[2], today)
  end
  local days = today - first
  if days < 40 then
    local c = wstart * (2 ^ days)
    if c < wtarget then cap = c end
  end
  if cap >= 0 then
    local used = tonumber(redis.call('GET', KEYS[3]) or '0')
    if used >= cap then return {0, math.ceil(to_midnight * 1000), 1} end
  end
end
if ceiling > 0 then
  local h = redis.call('HMGET', KEYS[1], 'rate', 'tokens', 'ts', 'adj', 'cut')
  local rate = tonumber(h[1]) or ceiling
  local tokens = tonumber(h[2])
  local ts = tonumber(h[3]) or now
  local adj = tonumber(h[4]) or now
  if rate > ceiling then rate = ceiling end
  if rate < ceiling and now > adj then
    rate = math.min(ceiling, rate + step * (now - adj) / 60)
  end
  if now > adj then adj = now end
  local capacity = math.max(1, rate / 12)
  if tokens == nil then tokens = capacity end
  if now > ts then tokens = tokens + rate * (now - ts) / 60 end
  if tokens > capacity then tokens = capacity end
  local allowed = tokens >= 1
  if allowed then tokens = tokens - 1 end
  redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'tokens', tostring(tokens),
             'ts', tostring(math.max(now, ts)), 'adj', tostring(adj))
  redis.call('EXPIRE', KEYS[1], 86400)
  if not allowed then
    return {0, math.ceil((1 - tokens) * 60000 / rate), 0}
  end
end
if cap >= 0 then
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], 172800)
end
return {1, 0, 0}
"""

SLOW_DOWN_SCRIPT = """
local now = tonumber(ARGV[1])
local ceiling = tonumber(ARGV[2])
local step = tonumber(ARGV[3])
local factor = tonumber(ARGV[4])
local floor = tonumber(ARGV[5])
local hold = tonumber(ARGV[6])
local h = redis.call('HMGET', KEYS[1], 'rate', 'tokens', 'ts', 'adj', 'cut')
local rate = tonumber(h[1]) or ceiling
local tokens = tonumber(h[2])
local ts = tonumber(h[3]) or now
local adj = tonumber(h[4]) or now
local cut = tonumber(h[5])
if rate > ceiling then rate = ceiling end
if rate < ceiling and now > adj then
  rate = math.min(ceiling, rate + step * (now - adj) / 60)
end
if tokens == nil then tokens = math.max(1, rate / 12) end
if now > ts then tokens = math.min(math.max(1, rate / 12), tokens + rate * (now - ts) / 60) end
if cut == nil or now - cut >= hold then
  rate = math.max(floor, rate * factor)
  cut = now
end
if tokens > math.max(1, rate / 12) then tokens = math.max(1, rate / 12) end
redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'tokens', tostring(tokens),
           'ts', tostring(math.max(now, ts)), 'adj', tostring(math.max(now, adj)),
           'cut', tostring(cut))
redis.call('EXPIRE', KEYS[1], 86400)
return math.floor(rate * 1000)
"""


@dataclass(frozen=True, slots=True)
class ThrottleRequest:
    """One message to one group: whose rate, which ceiling, which domain warms up."""

    sender: str
    group: DomainGroup
    ceiling: int | None
    from_domain: str


class DomainThrottle(abc.ABC):
    policy: ThrottlePolicy

    def take(
        self, sender: str, group: DomainGroup, *, ceiling: int | None, from_domain: str
    ) -> ThrottleDecision:
        """One message to ``group`` from ``sender`` now, or how long to wait."""
        return self.take_many([ThrottleRequest(sender, group, ceiling, from_domain)])[0]

    @abc.abstractmethod
    def take_many(self, requests: Sequence[ThrottleRequest]) -> list[ThrottleDecision]:
        """``take`` for each request, in order (one round trip for a worker's batch)."""

    @abc.abstractmethod
    def slow_down(self, sender: str, group: DomainGroup, *, ceiling: int) -> float | None:
        """A rate deferral: halve the group's rate (once per hold window); the new rate."""


class RedisDomainThrottle(DomainThrottle):
    def __init__(
        self,
        store: RedisStore,
        policy: ThrottlePolicy,
        *,
        clock: Clock = time.time,
        cut_hold_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self.policy = policy
        self._clock = clock
        self._hold = cut_hold_seconds
        self._take: Script | None = None
        self._slow: Script | None = None

    def take_many(self, requests: Sequence[ThrottleRequest]) -> list[ThrottleDecision]:
        warmup = self.policy.warmup_start_per_day
        decisions = [_ALLOWED] * len(requests)
        # Nothing to check (no ceiling, no warm-up): no round trip at all.
        checked = [i for i, r in enumerate(requests) if r.ceiling is not None or warmup]
        if not checked:
            return decisions
        now = self._clock()
        today = int(now // DAY_SECONDS)
        try:
            if self._take is None:
                self._take = self._store.client.register_script(TAKE_SCRIPT)
            pipe = self._store.client.pipeline(transaction=False)
            for index in checked:
                request = requests[index]
                self._take(
                    keys=[
                        rate_key(request.sender, request.group),
                        f"{KEY_PREFIX}warmup-first:{request.from_domain}",
                        f"{KEY_PREFIX}warmup:{request.from_domain}:{request.group.value}:{today}",
                    ],
                    args=[
                        repr(now),
                        request.ceiling or 0,
                        repr(self.policy.increase_step),
                        warmup or 0,
                        self.policy.warmup_target_per_day,
                        today,
                        repr((today + 1) * DAY_SECONDS - now),
                    ],
                    client=pipe,
                )
            answers = pipe.execute()
        except RedisError:
            log.exception("the domain throttle could not be checked; sending unthrottled")
            return decisions
        for index, answer in zip(checked, answers, strict=True):
            allowed, wait_ms, warmup_cap = (int(value) for value in answer)
            if not allowed:
                seconds = min(MAX_DELAY_SECONDS, max(1, math.ceil(wait_ms / 1000)))
                reason = "warm-up daily cap" if warmup_cap else "rate ceiling"
                decisions[index] = ThrottleDecision(False, seconds, reason)
        return decisions

    def slow_down(self, sender: str, group: DomainGroup, *, ceiling: int) -> float | None:
        args: list[Any] = [
            repr(self._clock()),
            ceiling,
            repr(self.policy.increase_step),
            repr(self.policy.decrease_factor),
            repr(self.policy.floor_per_minute),
            repr(self._hold),
        ]
        try:
            if self._slow is None:
                self._slow = self._store.client.register_script(SLOW_DOWN_SCRIPT)
            milli = int(self._slow(keys=[rate_key(sender, group)], args=args))
        except RedisError:
            log.exception("the domain throttle could not be slowed down")
            return None
        return milli / 1000

    def current_rate(self, sender: str, group: DomainGroup) -> float | None:
        """The stored AIMD rate (per minute), as last written; for operators and tests."""
        raw = self._store.client.hget(rate_key(sender, group), "rate")
        return float(raw) if raw is not None else None


def rate_key(sender: str, group: DomainGroup) -> str:
    return f"{KEY_PREFIX}throttle:{sender}:{group.value}"
