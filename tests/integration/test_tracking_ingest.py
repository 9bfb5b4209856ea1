"""Issue 21 item 3: tracking hits through the Redis stream and the consumer, in batches.

Real PostgreSQL, Redis and moto's SQS: hits are queued by the tracking
function's handler (or pushed as it pushes them), and the consumer's drain
(services/tracking_ingest.py) is driven here, never waited for.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from sqlalchemy import func, select, text

from mailroom.adapters.db.tables import TrackingHitRow
from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.redis_tracking import RedisHitQueue
from mailroom.adapters.tracking_doorbell import SqsIngestDoorbell
from mailroom.domain.tracking import LinkKind, QueuedHit
from mailroom.services import tracking_ingest
from mailroom.services.tracking import apply_hits
from mailroom.services.tracking_ingest import DrainLimits
from tests.integration.conftest import SmtpSink
from tests.integration.test_bounces import Stack
from tests.integration.test_tracking import (
    PERSON,
    answer,
    drain,
    events_of,
    html_of,
    send_tracked,
    tokens_in,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(
        database,
        redis_url,
        queue_url,
        smtp_sink,
        tracking_base_url="https://t.acme.example",
        tracking_machine_seconds=0,
        tracking_hits_per_token_minute=1000,
    )


def queue_of(stack: Stack) -> RedisHitQueue:
    assert stack.services.hit_queue is not None
    return stack.services.hit_queue


def tracked_tokens(stack: Stack) -> tuple[uuid.UUID, str, str, str]:
    """A tracked message's id, pixel, first link and honeypot tokens."""
    message_id, mail = send_tracked(stack)
    html = html_of(mail)
    (pixel,) = tokens_in(html, "t")
    links = tokens_in(html, "c")
    return message_id, pixel, links[0], links[-1]


def count(stack: Stack, table: Any, message_id: uuid.UUID) -> int:
    with stack.database.engine.connect() as connection:
        return int(
            connection.execute(
                select(func.count()).select_from(table).where(table.message_id == message_id)
            ).scalar_one()
        )


def test_the_request_path_only_queues_and_one_drain_writes_the_batch(stack: Stack) -> None:
    # GIVEN a tracked message
    message_id, pixel, link, _ = tracked_tokens(stack)
    # WHEN it is opened 30 times and clicked 20 times
    for _ in range(30):
        assert answer(stack, f"/t/{pixel}.gif")["statusCode"] == 200
    for _ in range(20):
        assert answer(stack, f"/c/{link}")["statusCode"] == 302
    # THEN nothing is in PostgreSQL yet: the hits wait in the stream
    assert count(stack, TrackingHitRow, message_id) == 0
    assert queue_of(stack).backlog() == 50
    # WHEN the consumer drains
    report = drain(stack)
    # THEN one batch wrote all 50 hits and their 50 events
    assert (report.batches, report.entries) == (1, 50)
    assert (report.hits_written, report.events_written) == (50, 50)
    assert len(events_of(stack, message_id, "opened")) == 30
    assert len(events_of(stack, message_id, "clicked")) == 20
    # AND only the first human open says it is the first
    assert [e["first_open"] for e in events_of(stack, message_id, "opened")].count(True) == 1
    # AND the stream is empty again
    assert queue_of(stack).backlog() == 0
    # AND the outbox holds every event for the outbound webhooks
    with stack.database.engine.connect() as connection:
        outbox = connection.execute(
            text(
                "SELECT type, count(*) FROM webhook_events WHERE message_id = :m "
                "AND type IN ('opened', 'clicked') GROUP BY type ORDER BY type"
            ),
            {"m": message_id},
        ).all()
    assert [tuple(row) for row in outbox] == [("clicked", 20), ("opened", 30)]


def test_the_honeypot_in_a_batch_flags_the_scanners_clicks_before_and_after_it(
    stack: Stack,
) -> None:
    # GIVEN a scanner's clicks around the honeypot, and a person's, queued together
    message_id, _, real, honeypot = tracked_tokens(stack)
    scanner = {"user_agent": "Mozilla/5.0 (Windows NT 10.0) Chrome/120", "ip": "198.51.100.4"}
    assert answer(stack, f"/c/{real}", **scanner)["statusCode"] == 302
    assert answer(stack, f"/c/{honeypot}", **scanner)["statusCode"] == 200
    assert answer(stack, f"/c/{real}", **scanner)["statusCode"] == 302
    assert answer(stack, f"/c/{real}")["statusCode"] == 302
    # WHEN one drain writes them
    drain(stack)
    # THEN both of the scanner's clicks are machines, in their events too
    clicked = events_of(stack, message_id, "clicked")
    assert [event["machine"] for event in clicked] == [True, True, False]
    assert clicked[0]["signals"] == ["honeypot"]
    engagement = stack.services.tracking_store.engagement(message_id)  # type: ignore[union-attr]
    assert (engagement.clicks, engagement.machine_clicks, engagement.unique_clicks) == (3, 2, 1)


def test_two_consumers_applying_overlapping_batches_at_once_count_each_hit_once(
    stack: Stack,
) -> None:
    # GIVEN 120 queued hits on a tracked message: 80 opens and 40 clicks
    message_id, pixel, link, _ = tracked_tokens(stack)
    now = time.time()
    hits = [
        QueuedHit.new(
            pixel if n % 3 else link,
            LinkKind.OPEN if n % 3 else LinkKind.CLICK,
            PERSON,
            f"203.0.113.{n % 50}",
            now + n / 1000,
        )
        for n in range(120)
    ]
    store = stack.services.tracking_store
    assert store is not None
    config = stack.services.tracking_config
    # WHEN two consumers apply overlapping batches at the same moment, each
    # twice (a redelivery), one of them in the opposite order
    batches = [hits[:80], hits[40:][::-1]]
    start = threading.Barrier(2)

    def consume(batch: list[QueuedHit]) -> list[int]:
        start.wait()
        return [apply_hits(store, config, batch).hits for _ in range(2)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        written = list(pool.map(consume, batches))
    # THEN each hit was written once between them, and so was its event
    assert sum(sum(runs) for runs in written) == 120
    assert count(stack, TrackingHitRow, message_id) == 120
    assert len(events_of(stack, message_id, "opened")) == 80
    assert len(events_of(stack, message_id, "clicked")) == 40


def test_a_consumer_that_died_mid_batch_leaves_it_to_another_and_nothing_is_doubled(
    stack: Stack,
) -> None:
    # GIVEN 10 queued opens, read by a consumer that then dies before acknowledging
    message_id, pixel, _, _ = tracked_tokens(stack)
    for _ in range(10):
        answer(stack, f"/t/{pixel}.gif")
    queue = queue_of(stack)
    taken = queue.read("dies", 100)
    assert len(taken) == 10
    # WHEN another consumer drains, taking over entries idle for any time
    store = stack.services.tracking_store
    assert store is not None
    report = tracking_ingest.drain(
        store,
        queue,
        stack.services.tracking_config,
        consumer="survivor",
        limits=DrainLimits(reclaim_after_seconds=0),
    )
    # THEN it wrote the 10
    assert report.hits_written == 10
    # AND the first consumer's late write of the same batch adds nothing
    late = apply_hits(
        store, stack.services.tracking_config, [QueuedHit.decode(e.body) for e in taken]
    )
    assert late.hits == 0
    assert late.events == 0
    assert len(events_of(stack, message_id, "opened")) == 10


def test_the_doorbell_rings_once_until_the_consumer_has_gone_quiet(stack: Stack) -> None:
    # GIVEN a quiet consumer
    queue = queue_of(stack)
    token = "A" * 22

    def push() -> tuple[bool, bool]:
        return queue.push(
            QueuedHit.new(token, LinkKind.OPEN, PERSON, "203.0.113.1", time.time()), 100
        )

    # WHEN hits are queued THEN the first rings, the next ones do not
    assert push() == (True, True)
    assert push() == (True, False)
    assert push() == (True, False)
    # WHEN the consumer drains the stream empty (the unknown token's hits are dropped)
    report = drain(stack)
    assert report.entries == 3
    assert report.hits_written == 0
    # THEN the next hit rings again
    assert push() == (True, True)


def test_entries_failed_too_often_go_to_the_dead_letter_queue(stack: Stack, aws: str) -> None:
    # GIVEN a dead-letter queue, and two hits a consumer took and never finished
    sqs = boto3.client("sqs", region_name="us-east-1")
    dead_letters_url = sqs.create_queue(QueueName=f"tracking-dlq-{uuid.uuid4().hex[:8]}")[
        "QueueUrl"
    ]
    _, pixel, _, _ = tracked_tokens(stack)
    answer(stack, f"/t/{pixel}.gif")
    answer(stack, f"/t/{pixel}.gif", user_agent="Mozilla/5.0")
    queue = queue_of(stack)
    assert len(queue.read("crashed", 10)) == 2
    store = stack.services.tracking_store
    assert store is not None
    # WHEN a drain finds them delivered more often than allowed
    report = tracking_ingest.drain(
        store,
        queue,
        stack.services.tracking_config,
        consumer="next",
        limits=DrainLimits(reclaim_after_seconds=0, max_deliveries=1),
        dead_letters=SqsIngestDoorbell("", dead_letters_url, "us-east-1"),
    )
    # THEN they are in the dead-letter queue as they were queued, and not written
    assert report.dead_lettered == 2
    assert report.hits_written == 0
    bodies = [
        m["Body"]
        for m in sqs.receive_message(QueueUrl=dead_letters_url, MaxNumberOfMessages=10)["Messages"]
    ]
    assert sorted(QueuedHit.decode(body).user_agent for body in bodies) == ["Mozilla/5.0", PERSON]
    assert queue.backlog() == 0
    assert all(json.loads(body)[1] == pixel for body in bodies)


def test_a_hit_the_database_refuses_is_set_apart_and_the_rest_written(
    stack: Stack, aws: str
) -> None:
    # GIVEN three good hits queued with one PostgreSQL refuses (a NUL in its
    # user agent: what the tracking function never queues, see the next test)
    sqs = boto3.client("sqs", region_name="us-east-1")
    dead_letters_url = sqs.create_queue(QueueName=f"tracking-dlq-{uuid.uuid4().hex[:8]}")[
        "QueueUrl"
    ]
    message_id, pixel, _, _ = tracked_tokens(stack)
    queue = queue_of(stack)
    for agent in (PERSON, "bad\x00agent", PERSON, PERSON):
        queue.push(QueuedHit.new(pixel, LinkKind.OPEN, agent, "203.0.113.1", time.time()), 100)
    store = stack.services.tracking_store
    assert store is not None
    config = stack.services.tracking_config
    # WHEN a drain's batch fails on it
    with pytest.raises(Exception, match="0000"):
        tracking_ingest.drain(store, queue, config, consumer="first")
    assert count(stack, TrackingHitRow, message_id) == 0
    # THEN the next drain, retrying the batch one entry at a time, writes the good three
    retry = DrainLimits(reclaim_after_seconds=0)
    report = tracking_ingest.drain(store, queue, config, consumer="second", limits=retry)
    assert report.hits_written == 3
    assert len(events_of(stack, message_id, "opened")) == 3
    # AND once it was delivered too often, the bad one goes to the dead-letter queue
    report = tracking_ingest.drain(
        store,
        queue,
        config,
        consumer="third",
        limits=DrainLimits(reclaim_after_seconds=0, max_deliveries=2),
        dead_letters=SqsIngestDoorbell("", dead_letters_url, "us-east-1"),
    )
    assert report.dead_lettered == 1
    (dead,) = sqs.receive_message(QueueUrl=dead_letters_url)["Messages"]
    assert QueuedHit.decode(dead["Body"]).user_agent == "bad\x00agent"
    assert queue.backlog() == 0


def test_the_tracking_function_queues_only_what_postgresql_can_store(stack: Stack) -> None:
    # GIVEN a pixel fetched with a NUL and a lone surrogate in its user agent
    message_id, pixel, _, _ = tracked_tokens(stack)
    assert (
        answer(stack, f"/t/{pixel}.gif", user_agent="Mozilla/5.0 (X11)\x00\ud800 x")["statusCode"]
        == 200
    )
    # WHEN the consumer drains THEN the hit is written, its agent made storable
    assert drain(stack).hits_written == 1
    (opened,) = events_of(stack, message_id, "opened")
    assert opened["user_agent"] == "Mozilla/5.0 (X11)? x"
