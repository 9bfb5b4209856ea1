"""Delivery analytics (issue 21 item 4): 90 days of 10 million messages queried, and the roll-up.

The history is generated at rollup level, straight into the rollup tables
(analytics_hourly and analytics_hourly_by) with INSERT ... SELECT: 90 days of
hourly rows for one client sending ~10 million messages (4 queues, 8
templates, 2 sending domains, 4 recipient groups, 5 tags), plus 20 smaller
clients for the operator's view. Writing 10 million messages and 40 million
events through the roll-up would take hours on this machine and measure the
roll-up, not the query; the roll-up is timed on its own on a raw sample:
messages and events written in multi-row statements (the trigger queues
them), then rolled up.

Timed: GET /v1/analytics/* through the service (``analytics.report``: the
rollup read plus the local bucketing), no filter, one filter, two filters
(the full-dimension table), the admin view across clients, by day and by
hour, in America/New_York.

Needs PostgreSQL on 127.0.0.1 (MAILROOM_BENCH_DATABASE_URL to override).

    PYTHONHASHSEED=0 .venv/bin/python bench/analytics.py [--messages 10000000] [--sample 20000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shared"))
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, insert, text  # noqa: E402

from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head  # noqa: E402
from mailroom.adapters.db.tables import ClientRow, MessageEventRow, MessageRow  # noqa: E402
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork  # noqa: E402
from mailroom.domain.analytics import COUNTERS, parse_query  # noqa: E402
from mailroom.services import analytics  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_analytics",
)
DAYS = 90
QUEUES = 4
TEMPLATES = 8
DOMAINS = 2
GROUPS = ("gmail", "outlook", "yahoo", "other")
TAGS = 5
SMALL_CLIENTS = 20
TRIGGER = "message_events_analytics"


def fresh_database() -> None:
    ensure_database_exists(DATABASE_URL)
    engine = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade_to_head(DATABASE_URL)


def add_client(database: Database, name: str) -> uuid.UUID:
    client_id = uuid.uuid4()
    with database.engine.begin() as connection:
        connection.execute(
            insert(ClientRow).values(
                id=client_id,
                name=name,
                api_key_prefix=f"mr_live_{uuid.uuid4().hex[:24]}",
                quota_limit=10**9,
                rate_limit=600,
            )
        )
    return client_id


# One client's hourly rows over every combination, ~``per_hour`` sends an hour
# in all; the other counters are fractions of sent. random() per row.
FULL_HISTORY = """
INSERT INTO analytics_hourly
  (client_id, is_test, hour, queue, template, sending_domain, recipient_group,
   sent, delivered, hard_bounces, soft_bounces, complaints, opens, machine_opens,
   unique_opens, clicks, machine_clicks, unique_clicks, unsubscribes, suppressed, failed)
SELECT :client, false, h,
       CASE q WHEN 1 THEN 'default' ELSE CAST(CAST(md5('q' || q) AS uuid) AS text) END,
       't' || t, 'd' || d || '.example', g,
       s, (s * 0.97)::bigint, (s * 0.01)::bigint, (s * 0.01)::bigint, (s * 0.0005)::bigint,
       (s * 0.45)::bigint, (s * 0.15)::bigint, (s * 0.25)::bigint, (s * 0.08)::bigint,
       (s * 0.01)::bigint, (s * 0.05)::bigint, (s * 0.002)::bigint, (s * 0.003)::bigint,
       (s * 0.002)::bigint
FROM generate_series(CAST(:start AS timestamptz), CAST(:end AS timestamptz) - interval '1 hour',
                     interval '1 hour') AS h,
     generate_series(1, CAST(:queues AS int)) AS q,
     generate_series(1, CAST(:templates AS int)) AS t,
     generate_series(1, CAST(:domains AS int)) AS d, unnest(CAST(:groups AS text[])) AS g,
     LATERAL (SELECT (random() * 2 * CAST(:per_combo AS float8))::bigint
                     + (h::date - h::date) AS s) AS r
"""

SUMS = ", ".join(f"sum({name})" for name in COUNTERS)
NAMES = ", ".join(COUNTERS)
# The one-dimension table, derived from the full one so the two agree.
BY_DIMENSION = """
INSERT INTO analytics_hourly_by (client_id, dimension, value, is_test, hour, {names})
SELECT client_id, '{dimension}', {value}, is_test, hour, {sums}
FROM analytics_hourly WHERE client_id = :client GROUP BY client_id, 3, is_test, hour
"""
# Tag i on 1 message in i + 1.
BY_TAG = """
INSERT INTO analytics_hourly_by (client_id, dimension, value, is_test, hour, {names})
SELECT client_id, 'tag', 'tag' || i, is_test, hour, {scaled}
FROM analytics_hourly_by, generate_series(1, CAST(:tags AS int)) AS i
WHERE client_id = :client AND dimension = 'all'
"""


def generate(
    database: Database, client_id: uuid.UUID, messages: int, end: datetime, *, small: bool = False
) -> int:
    """``small``: one queue, two templates, one domain (the operator's other clients)."""
    hours = DAYS * 24
    queues, templates, domains = (1, 2, 1) if small else (QUEUES, TEMPLATES, DOMAINS)
    combos = queues * templates * domains * len(GROUPS)
    params = {
        "client": client_id,
        "start": end - timedelta(days=DAYS),
        "end": end,
        "queues": queues,
        "templates": templates,
        "domains": domains,
        "groups": "{" + ",".join(GROUPS) + "}",
        "per_combo": messages / hours / combos,
        "tags": TAGS,
    }
    with database.engine.begin() as connection:
        connection.execute(text(FULL_HISTORY), params)
        for dimension, value in (
            ("all", "''"),
            ("queue", "queue"),
            ("template", "template"),
            ("sending_domain", "sending_domain"),
            ("recipient_group", "recipient_group"),
        ):
            connection.execute(
                text(BY_DIMENSION.format(names=NAMES, dimension=dimension, value=value, sums=SUMS)),
                params,
            )
        scaled = ", ".join(f"{name} / (i + 1)" for name in COUNTERS)
        connection.execute(text(BY_TAG.format(names=NAMES, scaled=scaled)), params)
        sent = connection.execute(
            text(
                "SELECT sum(sent) FROM analytics_hourly_by "
                "WHERE client_id = :client AND dimension = 'all'"
            ),
            params,
        ).scalar_one()
    return int(sent)


def timed(label: str, run: object, repeat: int) -> float:
    assert callable(run)
    run()  # warm: plans cached, pages in shared buffers
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        samples.append(time.perf_counter() - began)
    p50 = statistics.median(samples) * 1000
    worst = max(samples) * 1000
    print(f"  {label:<62} p50 {p50:7.1f} ms   max {worst:7.1f} ms")
    return worst


def roll_up_sample(database: Database, client_id: uuid.UUID, messages: int) -> None:
    """Raw messages and ~5 events each, written in 500-row statements, then rolled up."""
    rng = random.Random(21)
    now = datetime.now(UTC)
    ids = []
    rows = []
    for _ in range(messages):
        message_id = uuid.uuid4()
        ids.append(message_id)
        address = f"u{rng.randrange(10**6)}@{rng.choice(['gmail.com', 'outlook.com', 'x.org'])}"
        rows.append(
            {
                "id": message_id,
                "client_id": client_id,
                "trace_id": "bench",
                "template_name": f"t{rng.randrange(TEMPLATES)}",
                "from_address": "news@d1.example",
                "recipient": address,
                "to_addresses": [address],
                "options": {"tags": [f"tag{rng.randrange(1, TAGS + 1)}"]},
                "status": "sent",
            }
        )
    with database.engine.begin() as connection:
        for start in range(0, len(rows), 1000):
            connection.execute(insert(MessageRow).values(rows[start : start + 1000]))
    events = []
    for message_id in ids:
        at = now - timedelta(minutes=rng.randrange(600))
        events.append({"message_id": message_id, "type": "sent", "detail": {}, "at": at})
        events.append({"message_id": message_id, "type": "delivered", "detail": {}, "at": at})
        for _ in range(rng.randrange(4)):
            kind = rng.choice(["opened", "opened", "clicked"])
            machine = rng.random() < 0.3
            events.append(
                {"message_id": message_id, "type": kind, "detail": {"machine": machine}, "at": at}
            )
        if rng.random() < 0.02:
            events.append(
                {
                    "message_id": message_id,
                    "type": "bounced",
                    "detail": {"reject_reason": "bounced"},
                    "at": at,
                }
            )
    # The trigger's cost to writers: statements alternate with it off and on
    # (the same shapes, interleaved, so the machine's load falls on both).
    # Events written with it off are not queued and so not rolled up.
    spent = {False: 0.0, True: 0.0}
    written = {False: 0, True: 0}
    with database.engine.begin() as connection:
        for index, start in enumerate(range(0, len(events), 500)):
            on = index % 2 == 1
            state = "ENABLE" if on else "DISABLE"
            connection.execute(text(f"ALTER TABLE message_events {state} TRIGGER {TRIGGER}"))
            chunk = events[start : start + 500]
            began = time.perf_counter()
            connection.execute(insert(MessageEventRow).values(chunk))
            spent[on] += time.perf_counter() - began
            written[on] += len(chunk)
        connection.execute(text(f"ALTER TABLE message_events ENABLE TRIGGER {TRIGGER}"))
    per_off = spent[False] / written[False] * 1e6
    per_on = spent[True] / written[True] * 1e6
    print(
        f"  wrote {len(events):,} events in 500-row statements: {per_off:.0f} µs/event with the "
        f"analytics trigger off, {per_on:.0f} µs/event on ({written[True]:,} queued)"
    )
    began = time.perf_counter()
    report = analytics.roll_up(SqlUnitOfWork(database))
    took = time.perf_counter() - began
    print(
        f"  roll-up: {report.events:,} events in {report.batches} batches, {report.rows:,} rollup "
        f"row upserts, {took:.2f} s ({report.events / took:,.0f} events/s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="raw messages to roll up")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    fresh_database()
    database = Database(DATABASE_URL, pool_size=2)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    print(
        f"generating {DAYS} days of rollups for {args.messages:,} messages (one client) "
        f"and {SMALL_CLIENTS} clients of {args.messages // 100:,}"
    )
    began = time.perf_counter()
    big = add_client(database, "big")
    sent = generate(database, big, args.messages, end)
    for index in range(SMALL_CLIENTS):
        generate(
            database, add_client(database, f"small-{index}"), args.messages // 100, end, small=True
        )
    with database.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
        full = connection.execute(text("SELECT count(*) FROM analytics_hourly")).scalar_one()
        by = connection.execute(text("SELECT count(*) FROM analytics_hourly_by")).scalar_one()
    print(
        f"  {sent:,} sends for the big client; {full:,} full-dimension rows, {by:,} "
        f"one-dimension rows in all; generated in {time.perf_counter() - began:.1f} s"
    )

    now = end - timedelta(minutes=30)

    def report(params: dict[str, str], client: uuid.UUID | None, view: str = "overview") -> object:
        query = parse_query(
            {"tz": "America/New_York", **params}, now=now, client_id=client, allowed=()
        )
        return lambda: analytics.report(SqlUnitOfWork(database), query, view)

    ninety = {
        "from": (end - timedelta(days=DAYS)).isoformat(),
        "to": end.isoformat(),
        "granularity": "day",
    }
    month_by_hour = {
        "from": (end - timedelta(days=31)).isoformat(),
        "to": end.isoformat(),
        "granularity": "hour",
    }
    print(f"queries ({args.repeat} runs each, after one warm-up):")
    worst = max(
        timed("90 days by day, no filter", report(ninety, big), args.repeat),
        timed("90 days by day, template", report({**ninety, "template": "t3"}, big), args.repeat),
        timed(
            "90 days by day, tag", report({**ninety, "tag": "tag2"}, big, "engagement"), args.repeat
        ),
        timed(
            "90 days by day, template + recipient_group (full table)",
            report({**ninety, "template": "t3", "recipient_group": "gmail"}, big),
            args.repeat,
        ),
        timed(
            "90 days by day, queue + template + domain + group (full table)",
            report(
                {
                    **ninety,
                    "queue": "default",
                    "template": "t3",
                    "sending_domain": "d1.example",
                    "recipient_group": "gmail",
                },
                big,
            ),
            args.repeat,
        ),
        timed("31 days by hour, no filter", report(month_by_hour, big), args.repeat),
        timed("admin: 90 days by day, every client", report(ninety, None), args.repeat),
    )
    print(f"  slowest single query: {worst:.1f} ms (target 200 ms)")
    print(f"roll-up of a raw sample ({args.sample:,} messages):")
    roll_up_sample(database, add_client(database, "raw"), args.sample)
    database.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
