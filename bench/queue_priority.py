"""Issue 20: a priority-10 message's latency behind a low-priority backlog.

A backlog of ``--backlog`` messages sits on the low band (priority 1), then
``--urgent`` priority-10 messages are accepted one at a time, ``--gap``
seconds apart, while the local runner's band loop (devstack's
``PriorityPoller``, as ``make dev`` runs it) feeds the real worker handler.
Latency is the row's ``sent_at`` minus its ``created_at`` (acceptance), both
PostgreSQL's clock; p50 and p99 over the urgent messages. Also printed: how
many backlog messages went out meanwhile (the backlog keeps flowing).

SQS is moto's server on 127.0.0.1 (its own process), or with ``--sqs
localstack`` LocalStack: the one answering at ``--localstack-url``, else one
started on this host from .venv-localstack (as ``make dev-localstack`` does)
on a free port, and stopped at the end. moto slows with queue depth (a
receive walks the whole queue), so the issue's 20,000-message backlog needs
LocalStack. The backlog goes onto SQS with SendMessageBatch from
``--fill-threads`` threads; how long that took is printed. The SMTP server
is the worker bench's asyncio responder. Also printed: what one round of
the band loop costs (receives per band, the low band's batch), which is
what an urgent message waits for. Needs PostgreSQL and Redis:
MAILROOM_BENCH_DATABASE_URL (recreated), MAILROOM_BENCH_REDIS_URL.

    .venv/bin/python bench/queue_priority.py [--backlog 2000] [--urgent 50]
    .venv/bin/python bench/queue_priority.py --sqs localstack --backlog 20000 --urgent 50
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
    parser.add_argument("--sqs", choices=("moto", "localstack"), default="moto")
    parser.add_argument(
        "--localstack-url",
        help="reuse the LocalStack answering here (else one is started on a free port)",
    )
    parser.add_argument("--fill-threads", type=int, default=4)
    parser.add_argument(
        "--low-batch-size",
        type=int,
        help="the low band's BatchSize instead of template.yaml's (what smaller batches buy)",
    )
    args = parser.parse_args()

    with sqs_endpoint(args.sqs, args.localstack_url) as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        run(args)


def run(args: argparse.Namespace) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    # Names of this run only: a LocalStack reused from someone else keeps theirs.
    suffix = uuid.uuid4().hex[:8]
    urls = {
        band: sqs.create_queue(
            QueueName=f"bench-{band.value}-{suffix}", Attributes={"VisibilityTimeout": "60"}
        )["QueueUrl"]
        for band in Band
    }
    try:
        measure(args, sqs, urls)
    finally:
        for url in urls.values():
            sqs.delete_queue(QueueUrl=url)


def measure(args: argparse.Namespace, sqs: Any, urls: dict[Band, str]) -> None:
    prepare_database(DATABASE_URL, REDIS_URL)
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    counts = context.Array("q", 3)
    sink = context.Process(target=run_sink, args=(ready, stop, counts), daemon=True)
    sink.start()
    smtp_port = int(ready.get(timeout=30))
    services = build_services(DATABASE_URL, REDIS_URL, TEMPLATES, smtp_port, reuse=True)
    band_queue = SqsMessageQueue(
        urls[Band.NORMAL],
        "us-east-1",
        {Band.HIGH: urls[Band.HIGH], Band.LOW: urls[Band.LOW]},
        parallel_batches=args.fill_threads,
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
    written = time.perf_counter()
    refused = band_queue.enqueue_many_in(Band.LOW, backlog)
    assert not refused
    filled = time.perf_counter()
    depth = sqs.get_queue_attributes(
        QueueUrl=urls[Band.LOW], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    print(
        f"backlog of {args.backlog} ({args.sqs}): rows written in {written - began:.1f} s, "
        f"queued in {filled - written:.1f} s ({args.backlog / max(filled - written, 1e-9):.0f}"
        f" messages/s, SendMessageBatch from {args.fill_threads} threads; queue depth {depth}); "
        f"load average {_load()}"
    )

    # The worker's JSON log lines still cost what they cost, to /dev/null.
    stdout = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    timings = LoopTimings()
    loop = _band_loop(services, sqs, urls, timings, args.low_batch_size)
    loop.start()
    looping = time.perf_counter()
    urgent_ids: list[uuid.UUID] = []
    accept_seconds: list[float] = []
    try:
        time.sleep(1.0)  # the loop is working through the backlog
        for _ in range(args.urgent):
            prepared = sending.PreparedSend(_message(client_id), queue_name="urgent")
            client = _client(services, client_id)
            accepting = time.perf_counter()
            accepted = sending.accept_prepared(
                services.uow(), band_queue, prepared, client=client, routing=True
            )
            accept_seconds.append(time.perf_counter() - accepting)
            urgent_ids.append(accepted.id)
            time.sleep(args.gap)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _unsent(services, urgent_ids):
            time.sleep(0.2)
    finally:
        loop.stop(30)
        looped = time.perf_counter() - looping
        stop.set()
        sink.join(timeout=10)
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
        f"({len(latencies)}/{args.urgent} sent; load average {_load()}):"
    )
    if latencies:
        print(
            f"  p50 {statistics.median(latencies) * 1000:.0f} ms, p99 "
            f"{percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
            f"backlog messages sent meanwhile: {backlog_sent} ({backlog_sent / looped:.0f}/s)"
        )
    print(
        f"  accepting one (row + SendMessage to the high band): median "
        f"{statistics.median(accept_seconds) * 1000:.0f} ms, "
        f"max {max(accept_seconds) * 1000:.0f} ms"
    )
    timings.report()


class LoopTimings:
    """How long the band loop's receives and invocations took, per band."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.receives: dict[Band, list[float]] = {band: [] for band in Band}
        self.batches: dict[Band, list[tuple[int, float]]] = {band: [] for band in Band}

    def receive(self, band: Band, seconds: float) -> None:
        with self._lock:
            self.receives[band].append(seconds)

    def batch(self, band: Band, size: int, seconds: float) -> None:
        with self._lock:
            self.batches[band].append((size, seconds))

    def report(self) -> None:
        for band in Band:
            receives = self.receives[band]
            batches = self.batches[band]
            if receives:
                print(
                    f"  {band.value:>6} band: {len(receives)} receives, median "
                    f"{statistics.median(receives) * 1000:.1f} ms, p99 "
                    f"{percentile(receives, 0.99) * 1000:.1f} ms"
                )
            if batches:
                seconds = [s for _, s in batches]
                sizes = [n for n, _ in batches]
                print(
                    f"  {band.value:>6} band: {len(batches)} invocations of {min(sizes)}-"
                    f"{max(sizes)} messages, median {statistics.median(seconds) * 1000:.0f} ms, "
                    f"p99 {percentile(seconds, 0.99) * 1000:.0f} ms, "
                    f"max {max(seconds) * 1000:.0f} ms"
                )


class TimedPoller(QueuePoller):
    """A band's poller that notes how long its receives and invocations take."""

    def __init__(self, *args: Any, band: Band, timings: LoopTimings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._band = band
        self._timings = timings

    def _receive(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        began = time.perf_counter()
        try:
            return super()._receive(count, wait_seconds)
        finally:
            self._timings.receive(self._band, time.perf_counter() - began)

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        began = time.perf_counter()
        try:
            super()._deliver(messages)
        finally:
            self._timings.batch(self._band, len(messages), time.perf_counter() - began)


@contextmanager
def sqs_endpoint(kind: str, localstack_url: str | None) -> Iterator[str]:
    """The SQS endpoint of this run, started here (and stopped after) unless reused."""
    if kind == "moto":
        # moto in its own process, as the local runner's SQS would be: in this
        # one it would share the worker's interpreter lock.
        port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            moto.terminate()
            moto.wait(timeout=10)
        return
    from devstack import localstack

    endpoint = (localstack_url or f"http://127.0.0.1:{free_port()}").rstrip("/")
    if localstack.answers(endpoint):
        print(f"using the LocalStack answering at {endpoint}")
        yield endpoint
        return
    scratch = Path(tempfile.mkdtemp(prefix="bench-localstack-"))
    # Its own state and temporary files: by default LocalStack on the host
    # keeps them under its venv, which other LocalStacks started from the
    # same venv share.
    os.environ["FILESYSTEM_ROOT"] = str(scratch / "filesystem")
    began = time.perf_counter()
    process = localstack.start_on_host(endpoint, scratch / "localstack.log")
    print(
        f"LocalStack started at {endpoint} in {time.perf_counter() - began:.1f} s "
        f"(log: {scratch / 'localstack.log'})"
    )
    try:
        yield endpoint
    finally:
        localstack.stop(process)


def _load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


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


def _band_loop(
    services: Any,
    sqs: Any,
    urls: dict[Band, str],
    timings: LoopTimings,
    low_batch_size: int | None,
) -> PriorityPoller:
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
        band = BAND_OF[trigger.queue]
        if band is Band.LOW and low_batch_size is not None:
            trigger = dataclasses.replace(trigger, batch_size=low_batch_size)
        url = urls[band]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        queue = ProvisionedQueue(
            trigger.queue, url.rsplit("/", 1)[1], url, arn["Attributes"]["QueueArn"], 60
        )
        pollers.append(
            TimedPoller(sqs, queue, trigger, worker, region="us-east-1", band=band, timings=timings)
        )
    return PriorityPoller(pollers)


if __name__ == "__main__":
    main()
