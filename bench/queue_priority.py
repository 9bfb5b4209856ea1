"""Issue 20: a priority-10 message's latency behind a low-priority backlog.

A backlog of ``--backlog`` messages sits on the low band (priority 1), then
``--urgent`` priority-10 messages are accepted one at a time, ``--gap``
seconds apart, while the local runner's band loop (devstack's
``PriorityPoller``, as ``make dev`` runs it) feeds the real worker handler.
Latency is the row's ``sent_at`` minus its ``created_at`` (acceptance), both
PostgreSQL's clock; p50 and p99 over the urgent messages. Also printed: how
many backlog messages went out meanwhile (the backlog keeps flowing).

SQS is moto's server on 127.0.0.1 (its own process), the SMTP
server the worker bench's asyncio responder. Needs PostgreSQL and Redis:
MAILROOM_BENCH_DATABASE_URL (recreated), MAILROOM_BENCH_REDIS_URL.

    .venv/bin/python bench/queue_priority.py [--backlog 2000] [--urgent 50]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shared"))
sys.path.insert(0, str(REPO))
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

import boto3  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench._worker_bench import build_services, new_client, prepare_database  # noqa: E402
from bench.worker_pipeline import SAMPLE_PROPS, run_sink  # noqa: E402
from devstack.aws import ProvisionedQueue  # noqa: E402
from devstack.lambda_runtime import LocalFunction  # noqa: E402
from devstack.sqs_poller import PriorityPoller, QueuePoller  # noqa: E402
from devstack.template import load_stack  # noqa: E402
from mailroom.adapters.queue import SqsMessageQueue  # noqa: E402
from mailroom.domain.model import Message  # noqa: E402
from mailroom.domain.queues import Band, Queue  # noqa: E402
from mailroom.services import queues, sending, suppression  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_queues",
)
REDIS_URL = os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TEMPLATES = REPO / "templates"
BAND_OF = {
    "HighPrioritySendQueue": Band.HIGH,
    "SendQueue": Band.NORMAL,
    "LowPrioritySendQueue": Band.LOW,
}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--urgent", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.2)
    args = parser.parse_args()

    # moto in its own process, as the local runner's SQS would be: in this
    # one it would share the worker's interpreter lock.
    moto_port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{moto_port}"
    _wait_for(moto_port)
    sqs = boto3.client("sqs", region_name="us-east-1")
    urls = {
        band: sqs.create_queue(
            QueueName=f"bench-{band.value}", Attributes={"VisibilityTimeout": "60"}
        )["QueueUrl"]
        for band in Band
    }

    prepare_database(DATABASE_URL, REDIS_URL)
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    counts = context.Array("q", 3)
    sink = context.Process(target=run_sink, args=(ready, stop, counts), daemon=True)
    sink.start()
    smtp_port = int(ready.get(timeout=30))
    services = build_services(DATABASE_URL, REDIS_URL, TEMPLATES, smtp_port, reuse=True)
    band_queue = SqsMessageQueue(
        urls[Band.NORMAL], "us-east-1", {Band.HIGH: urls[Band.HIGH], Band.LOW: urls[Band.LOW]}
    )
    services.queue = band_queue
    client_id = new_client(services)
    low = queues.create_queue(
        services.uow(), Queue(id=uuid.uuid4(), client_id=client_id, name="newsletter", priority=1)
    )
    queues.create_queue(
        services.uow(), Queue(id=uuid.uuid4(), client_id=client_id, name="urgent", priority=10)
    )

    # The backlog: rows as the send API writes them, on the low band.
    began = time.perf_counter()
    backlog: list[tuple[uuid.UUID, str]] = []
    with services.uow() as uow:
        for _ in range(args.backlog):
            message = _message(client_id)
            uow.add_accepted(message, {}, suppression.recipient_rows(message))
            backlog.append((message.id, message.trace_id))
        uow.queues.assign_many([m for m, _ in backlog], low.id)
        uow.commit()
    refused = band_queue.enqueue_many_in(Band.LOW, backlog)
    assert not refused
    print(f"backlog of {args.backlog} queued in {time.perf_counter() - began:.1f} s")

    # The worker's JSON log lines still cost what they cost, to /dev/null.
    stdout = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    loop = _band_loop(services, sqs, urls)
    loop.start()
    urgent_ids: list[uuid.UUID] = []
    try:
        time.sleep(1.0)  # the loop is working through the backlog
        for _ in range(args.urgent):
            prepared = sending.PreparedSend(_message(client_id), queue_name="urgent")
            accepted = sending.accept_prepared(
                services.uow(),
                band_queue,
                prepared,
                client=_client(services, client_id),
                routing=True,
            )
            urgent_ids.append(accepted.id)
            time.sleep(args.gap)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _unsent(services, urgent_ids):
            time.sleep(0.2)
    finally:
        loop.stop(30)
        stop.set()
        sink.join(timeout=10)
        moto.terminate()
        moto.wait(timeout=10)
        os.dup2(stdout, 1)

    engine = create_engine(DATABASE_URL)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT extract(epoch FROM sent_at - created_at) FROM messages "
                "WHERE id = ANY(CAST(:ids AS uuid[])) AND sent_at IS NOT NULL"
            ),
            {"ids": "{" + ",".join(str(i) for i in urgent_ids) + "}"},
        ).scalars()
        latencies = [float(value) for value in rows]
        backlog_sent = connection.execute(
            text("SELECT count(*) FROM messages WHERE queue_id = :q AND status = 'sent'"),
            {"q": low.id},
        ).scalar_one()
    engine.dispose()
    print(
        f"priority-10 latency behind a backlog of {args.backlog} priority-1 messages "
        f"({len(latencies)}/{args.urgent} sent; load average {os.getloadavg()[0]:.1f}):"
    )
    print(
        f"  p50 {statistics.median(latencies) * 1000:.0f} ms, p99 "
        f"{percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
        f"backlog messages sent meanwhile: {backlog_sent}"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("moto did not start")


def _message(client_id: uuid.UUID) -> Message:
    return Message(
        id=uuid.uuid4(),
        client_id=client_id,
        trace_id=uuid.uuid4().hex,
        template_name="welcome",
        from_address="Acme <noreply@acme.example.com>",
        to=["ada@example.com"],
        props=SAMPLE_PROPS,
    )


def _client(services: Any, client_id: uuid.UUID) -> Any:
    with services.uow() as uow:
        return uow.clients.get(client_id)


def _unsent(services: Any, ids: list[uuid.UUID]) -> bool:
    with services.uow() as uow:
        found = uow.messages.get_many(ids)
    return any(m.sent_at is None for m in found.values())


def _band_loop(services: Any, sqs: Any, urls: dict[Band, str]) -> PriorityPoller:
    from mailroom.entrypoints.worker import process_send_batch

    spec = next(
        f
        for f in load_stack(REPO / "template.yaml", stack_name="b", region="us-east-1").functions
        if f.logical_id == "WorkerFunction"
    )
    worker = LocalFunction(
        spec,
        lambda event, context: process_send_batch(event, context, services),
        region="us-east-1",
        lock=threading.Lock(),
    )
    pollers = []
    for trigger in sorted(spec.sqs_triggers, key=lambda t: -(t.maximum_concurrency or 0)):
        url = urls[BAND_OF[trigger.queue]]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        queue = ProvisionedQueue(
            trigger.queue, url.rsplit("/", 1)[1], url, arn["Attributes"]["QueueArn"], 60
        )
        pollers.append(QueuePoller(sqs, queue, trigger, worker, region="us-east-1"))
    return PriorityPoller(pollers)


if __name__ == "__main__":
    main()
