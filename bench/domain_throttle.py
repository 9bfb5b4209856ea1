"""What the per-recipient-domain throttle (issue 20) costs the worker per message.

Times ``services.domain_throttling.admit`` (what the worker calls before each
send) in three cases, N messages each, on one Redis:

- ``off``: no ceiling for the group and no warm-up: no round trip at all;
- ``ceiling``: a ceiling high enough never to refuse: one EVALSHA per message;
- ``ceiling+warmup``: the same with a warm-up schedule (two more keys);
- ``... x10``: the same through ``admit_batch`` in batches of 10, as the
  worker calls it (one pipelined round trip per batch).

Prints wall time and this process's CPU time per message; the CPU figure is
the client's own work (argument building, the script call, parsing), the
wall figure adds the round trip and Redis's Lua. On a shared machine both
move between runs: compare within one run.

Redis: MAILROOM_BENCH_REDIS_URL (default redis://127.0.0.1:6379/14); its
``mailroom:throttle:*`` and ``mailroom:warmup*`` keys are deleted first.

    PYTHONPATH=shared:. .venv/bin/python bench/domain_throttle.py [N]
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import redis

from mailroom.adapters.domain_throttle import RedisDomainThrottle
from mailroom.adapters.redis_store import RedisStore
from mailroom.domain.model import Message
from mailroom.domain.throttling import DomainGroup, ThrottlePolicy
from mailroom.services.domain_throttling import admit, admit_batch

REDIS_URL = os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def message(index: int) -> Message:
    return Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="bench",
        template_name="welcome",
        from_address="news@sender.example",
        to=[f"user{index}@gmail.com"],
    )


def run(label: str, policy: ThrottlePolicy, count: int, batch: int = 1) -> None:
    limiter = RedisDomainThrottle(RedisStore(REDIS_URL), policy)
    messages = [message(i) for i in range(count)]
    admit(limiter, messages[0], None)  # registers the script: not timed
    wall, cpu = time.perf_counter(), time.process_time()
    held = 0
    if batch == 1:
        for item in messages:
            held += not admit(limiter, item, None).allowed
    else:
        for start in range(0, count, batch):
            chunk = [(item, None) for item in messages[start : start + batch]]
            held += sum(not d.allowed for d in admit_batch(limiter, chunk))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{label:16} {count:6d} messages  wall {wall / count * 1e6:7.1f} µs/msg  "
        f"cpu {cpu / count * 1e6:7.1f} µs/msg  held {held}"
    )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    client = redis.Redis.from_url(REDIS_URL)
    for pattern in ("mailroom:throttle:*", "mailroom:warmup*"):
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)
    high = {DomainGroup.GMAIL: 100_000_000}
    run("off", ThrottlePolicy(), count)
    run("ceiling", ThrottlePolicy(per_minute=high), count)
    run(
        "ceiling+warmup",
        ThrottlePolicy(
            per_minute=high, warmup_start_per_day=10_000_000, warmup_target_per_day=10**9
        ),
        count,
    )
    run("off x10", ThrottlePolicy(), count, batch=10)
    run("ceiling x10", ThrottlePolicy(per_minute=high), count, batch=10)
    run(
        "ceiling+warm x10",
        ThrottlePolicy(
            per_minute=high, warmup_start_per_day=10_000_000, warmup_target_per_day=10**9
        ),
        count,
        batch=10,
    )


if __name__ == "__main__":
    main()
