"""Open and click tracking (issue 21): the pixel's and the click's handler self-time.

The tracking function's handler (entrypoints/tracking.py ``handle``) called
in process with API Gateway events, on real PostgreSQL and Redis: what one
hit costs on the function's hot path (token check, one Redis script: limit,
append to the hit stream, doorbell; a click's link row, read once per
container), without HTTP. Then the consumer's drain of the hits queued
(issue 21 item 3). Also the worker's rewrite of a
10 KB HTML body with 20 links (no database).

Needs PostgreSQL and Redis on 127.0.0.1 (MAILROOM_BENCH_DATABASE_URL,
MAILROOM_BENCH_REDIS_URL to override).

    PYTHONHASHSEED=0 .venv/bin/python bench/tracking.py [--hits 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shared"))
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head  # noqa: E402
from mailroom.adapters.db.tracking import SqlTrackingStore  # noqa: E402
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork  # noqa: E402
from mailroom.bootstrap import bootstrap  # noqa: E402
from mailroom.config import Settings  # noqa: E402
from mailroom.domain.model import Client, Message, MessageStatus  # noqa: E402
from mailroom.domain.tracking import LinkPolicy, TrackingChoice, track_html  # noqa: E402
from mailroom.entrypoints.tracking import create_tracking_api, handle  # noqa: E402
from tests.events import FakeLambdaContext, load_event  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_tracking",
)
REDIS_URL = os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0"


def fresh_database() -> None:
    ensure_database_exists(DATABASE_URL)
    engine = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade_to_head(DATABASE_URL)


def event(path: str, resource: str, parameter: dict[str, str]) -> dict[str, Any]:
    request = load_event("status/get-message")
    request.update(path=path, resource=resource, httpMethod="GET", pathParameters=parameter)
    request["headers"] = {"User-Agent": USER_AGENT}
    request["multiValueHeaders"] = {"User-Agent": [USER_AGENT]}
    request["requestContext"]["identity"]["sourceIp"] = "203.0.113.9"
    return request


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, mean {statistics.fmean(ordered) * 1000:.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hits", type=int, default=2000)
    # For bench/instructions.py: the pixel's requests only, nothing after them.
    parser.add_argument("--pixels-only", action="store_true")
    args = parser.parse_args()
    fresh_database()
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = Settings(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        tracking_base_url="https://t.example.com",
        # Every hit recorded: the limit would turn most into Redis-only counts.
        tracking_hits_per_token_minute=10**9,
    )
    database = Database(DATABASE_URL)
    store = SqlTrackingStore(database)
    services = bootstrap(settings, tracking=store)
    client = Client(uuid.uuid4(), "bench", f"mr_live_{uuid.uuid4().hex[:24]}", 60, 100)
    with SqlUnitOfWork(services.tracking_store._database) as uow:  # type: ignore[union-attr]
        uow.clients.add(client)
        uow.commit()
    # Tracked messages with a pixel and a link each, sent an hour ago.
    html = '<html><body><a href="https://shop.example/a">a</a></body></html>'
    tokens: list[tuple[str, str]] = []
    for _ in range(200):
        message = Message(
            id=uuid.uuid4(),
            client_id=client.id,
            trace_id=uuid.uuid4().hex,
            template_name="welcome",
            from_address="a@example.com",
            to=["b@example.com"],
            status=MessageStatus.SENT,
        )
        with SqlUnitOfWork(database) as uow:
            uow.messages.add(message)
            uow.commit()
        tracked = track_html(html, TrackingChoice(True, True), LinkPolicy("https://t.example.com"))
        store.add_links(message.id, tracked.links)
        pixel = next(link.token for link in tracked.links if link.kind.value == "open")
        click = next(link.token for link in tracked.links if link.kind.value == "click")
        tokens.append((pixel, click))
    engine = create_engine(DATABASE_URL)
    with engine.begin() as connection:
        connection.execute(text("UPDATE messages SET sent_at = :at"), {"at": datetime.now(UTC)})
    engine.dispose()

    app = create_tracking_api(lambda: services)
    context = FakeLambdaContext("mailroom-tracking")
    pixels = [
        event(f"/t/{p}.gif", "/t/{file}", {"file": f"{p}.gif"})
        for p, _ in (tokens[i % len(tokens)] for i in range(args.hits))
    ]
    clicks = [
        event(f"/c/{c}", "/c/{token}", {"token": c})
        for _, c in (tokens[i % len(tokens)] for i in range(args.hits))
    ]
    measured = [("pixel", pixels)] if args.pixels_only else [("pixel", pixels), ("click", clicks)]
    for name, events in measured:
        for warm in events[:50]:
            handle(app, warm, context)
        samples = []
        cpu = []
        for request in events:
            started, started_cpu = time.perf_counter(), time.process_time()
            answer = handle(app, request, context)
            cpu.append(time.process_time() - started_cpu)
            samples.append(time.perf_counter() - started)
            assert answer["statusCode"] in (200, 302), answer
        print(f"{name} handler, {len(samples)} hits recorded: {percentiles(samples)}")
        # The handler's own CPU (waits for a core or a round trip excluded):
        # on a machine shared with other work the wall-clock p99 is mostly
        # time spent waiting for a core.
        print(f"{name} handler CPU time: {percentiles(cpu)}")

    if args.pixels_only:
        return 0
    # Issue 21 item 3: the handlers above only queued their hits; the
    # consumer writes them (what each handler used to do on its own path).
    from mailroom.services.tracking_ingest import DrainLimits, drain

    assert services.hit_queue is not None
    started = time.perf_counter()
    report = drain(
        store,
        services.hit_queue,
        services.tracking_config,
        consumer="bench",
        limits=DrainLimits(run_seconds=3600),
    )
    elapsed = time.perf_counter() - started
    print(
        f"consumer drain: {report.hits_written} hits in {report.batches} batches, "
        f"{elapsed:.2f} s ({report.hits_written / elapsed:.0f} hits/s)"
    )

    forged = [event("/t/not-a-token.gif", "/t/{file}", {"file": "not-a-token.gif"})] * 500
    samples = []
    for request in forged:
        started = time.perf_counter()
        handle(app, request, context)
        samples.append(time.perf_counter() - started)
    print(f"pixel handler, malformed token (no I/O): {percentiles(samples)}")

    body = (
        "<html><body>"
        + "".join(
            f'<p>{"lorem ipsum " * 30}<a href="https://shop.example/item/{i}?ref=mail&amp;x={i}">'
            f"item {i}</a></p>"
            for i in range(20)
        )
        + "</body></html>"
    )
    samples = []
    for _ in range(500):
        started = time.perf_counter()
        track_html(body, TrackingChoice(True, True), LinkPolicy("https://t.example.com"))
        samples.append(time.perf_counter() - started)
    print(f"rewrite of a {len(body) // 1024} KB body with 20 links: {percentiles(samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
