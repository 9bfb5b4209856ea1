"""Worker pipeline throughput on all cores, against a naive baseline in the same run.

Fast mode: SQS-shaped events of 10 records are fed straight to the worker
handler (``process_send_batch``) as Lambda would: claim, suppression check,
render + CSS inlining, MIME, breaker check, SMTP over one connection per
batch to a sink on 127.0.0.1, outcomes written to PostgreSQL. Naive mode is
the stock pipeline on the same rows, templates and sink: per message, read
the row, render, build MIME with the stdlib ``EmailMessage``, open a new SMTP
connection, write the status and its event and commit. Each mode runs in
``--workers`` processes at once (default: one per core, like Lambda
instances sharing the machine), the rows queued beforehand; the rate is
emails over the wall time from a shared start to the last process done. The
modes alternate for ``--rounds`` rounds; the median round is reported, and
the ratio of the medians. Signed mode (issue 16) is fast mode with the DKIM
signer in front of SMTP, one RSA-2048 signature per message (``--ed25519``
adds the second), keys cached per process as in the worker; ``--modes``
picks which modes run (``fast,signed`` to measure signing alone). Gated
mode (issue 20) is fast mode with the claim gate on and every check it can
make (queue read, per-client in-flight count, Redis send-rate bucket);
routed mode is the gate as deployed by default (the queue read only):
``--modes fast,routed,gated`` measures the gate's cost.

The sink (``run_sink`` below) is an asyncio responder that answers whole
buffers at once, in its own process, not aiosmtpd, which tops out near
1,000–1,500 messages/s here. Its CPU time is reported, to show it is not the
bottleneck. SQS is not in the loop (moto caps near 300 messages/s).

Needs PostgreSQL and Redis on 127.0.0.1: MAILROOM_BENCH_DATABASE_URL (default
postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_pipeline,
recreated each run) and MAILROOM_BENCH_REDIS_URL (default
redis://127.0.0.1:6379/14; only breaker keys are touched). About a minute.

    .venv/bin/python bench/worker_pipeline.py [--workers 2] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import multiprocessing
import os
import resource
import smtplib
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shared"))
sys.path.insert(0, str(REPO))  # for bench._worker_bench
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

from bench._worker_bench import (  # noqa: E402
    BenchContext,
    build_services,
    new_client,
    prepare_database,
)
from mailroom.bootstrap import Services  # noqa: E402
from mailroom.domain.mime import build_mime_stdlib  # noqa: E402
from mailroom.domain.model import EventType, Message, MessageStatus  # noqa: E402
from mailroom.services import suppression  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_pipeline",
)
REDIS_URL = os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
BATCH_SIZE = 10
TEMPLATES = REPO / "templates"
SAMPLE_EVENT = json.loads((REPO / "events" / "worker" / "sqs-batch.json").read_text())
SAMPLE_PROPS = json.loads((REPO / "templates" / "welcome" / "sample.json").read_text())


# --- the sink ------------------------------------------------------------------
# aiosmtpd tops out near 1,000-1,500 small messages/s on this machine (it parses
# every command into objects and runs handler hooks), which would cap this
# benchmark. This responder parses only the verb and the end of DATA and answers
# every complete command in a read with one write. It runs in its own process.

_EHLO = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 26214400\r\n"


class SinkCounts:
    def __init__(self) -> None:
        self.messages = 0
        self.sessions = 0


class SinkProtocol(asyncio.Protocol):
    def __init__(self, counts: SinkCounts) -> None:
        self._counts = counts
        self._buffer = b""
        self._in_data = False
        self._scan_from = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._counts.sessions += 1
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        replies: list[bytes] = []
        while True:
            if self._in_data:
                end = self._buffer.find(b"\r\n.\r\n", self._scan_from)
                if end < 0:
                    # The terminator may straddle two reads: rescan its width.
                    self._scan_from = max(0, len(self._buffer) - 4)
                    break
                self._buffer = self._buffer[end + 5 :]
                self._in_data = False
                self._scan_from = 0
                self._counts.messages += 1
                replies.append(b"250 2.0.0 queued\r\n")
                continue
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                break
            verb = self._buffer[:4].upper()
            self._buffer = self._buffer[line_end + 2 :]
            if verb == b"DATA":
                self._in_data = True
                self._scan_from = 0
                # The body starts right after: an empty one is "\r\n.\r\n" too.
                self._buffer = b"\r\n" + self._buffer
                replies.append(b"354 go ahead\r\n")
            elif verb == b"EHLO":
                replies.append(_EHLO)
            elif verb == b"QUIT":
                replies.append(b"221 bye\r\n")
                self._transport.write(b"".join(replies))
                self._transport.close()
                return
            else:  # HELO, MAIL, RCPT, RSET, NOOP: all accepted
                replies.append(b"250 ok\r\n")
        if replies:
            self._transport.write(b"".join(replies))


def run_sink(ready: Any, stop: Any, counts_out: Any) -> None:
    """Serve on 127.0.0.1 until ``stop`` is set; report messages, sessions, CPU seconds."""
    counts = SinkCounts()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SinkProtocol(counts), "127.0.0.1", 0, backlog=256)
        ready.put(int(server.sockets[0].getsockname()[1]))
        while not stop.is_set():
            await asyncio.sleep(0.05)
            counts_out[0], counts_out[1] = counts.messages, counts.sessions
            usage = resource.getrusage(resource.RUSAGE_SELF)
            counts_out[2] = int((usage.ru_utime + usage.ru_stime) * 1000)
        server.close()

    asyncio.run(serve())


def queue_events(services: Services, client_id: uuid.UUID, batches: int) -> list[dict[str, Any]]:
    """Queued rows, as the send API leaves them, and the SQS events naming them."""
    template = SAMPLE_EVENT["Records"][0]
    events = []
    with services.uow() as uow:
        for _ in range(batches):
            records = []
            for _ in range(BATCH_SIZE):
                message = Message(
                    id=uuid.uuid4(),
                    client_id=client_id,
                    trace_id=uuid.uuid4().hex,
                    template_name="welcome",
                    from_address="Acme <noreply@acme.example.com>",
                    to=["ada@example.com"],
                    props=SAMPLE_PROPS,
                )
                # As the send API writes it: the row, its event, its recipients.
                uow.add_accepted(message, {}, suppression.recipient_rows(message))
                record = copy.deepcopy(template)
                record["messageId"] = str(uuid.uuid4())
                record["body"] = json.dumps({"message_id": str(message.id)})
                records.append(record)
            events.append({"Records": records})
        uow.commit()
    return events


def naive_batch(services: Services, event: dict[str, Any], port: int) -> None:
    """The stock pipeline: per message a read, stdlib MIME, a new connection, a commit."""
    for record in event["Records"]:
        message_id = uuid.UUID(json.loads(record["body"])["message_id"])
        with services.uow() as uow:
            message = uow.messages.get(message_id)
        assert message is not None
        assert message.status is MessageStatus.QUEUED
        source = services.templates.get(message.template_name, message.template_version)
        rendered = services.renderer.render(source, message.props)
        email = build_mime_stdlib(message, rendered)
        with smtplib.SMTP("127.0.0.1", port) as connection:
            connection.sendmail(email.envelope_from, email.envelope_recipients, email.mime)
        message.status = MessageStatus.SENT
        message.provider = "smtp"
        message.provider_msg_id = email.message_id
        message.attempts += 1
        with services.uow() as uow:
            uow.messages.save_outcome(message)
            uow.messages.append_event(message.id, EventType.SENT, {"provider": "smtp"})
            uow.commit()


def worker_process(
    mode: str,
    port: int,
    events: list[dict[str, Any]],
    start: Any,
    results: Any,
    profile_path: str | None,
) -> None:
    """One worker (one Lambda instance): warm up, wait for the start, run its events."""
    from mailroom.entrypoints.worker import process_send_batch

    # The JSON log lines are still written (their cost is real), to /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    services = build_services(
        DATABASE_URL,
        REDIS_URL,
        TEMPLATES,
        port,
        reuse=mode != "naive",
        dkim_signing=mode == "signed",
    )
    if mode == "gated":
        # Issue 20's claim gate with every check on: the queue read, the
        # in-flight count and the Redis send-rate bucket (limits too high to bind).
        from mailroom.adapters.claim_limits import RedisClaimRateLimiter
        from mailroom.services.queues import ClaimGate

        assert services.redis_store is not None
        services.claim_gate_given = ClaimGate(
            RedisClaimRateLimiter(services.redis_store),
            client_sends_per_minute=10**9,
            client_max_in_flight=10**6,
        )
    elif mode not in ("naive", "routed"):
        # The pipeline as before issue 20: no claim gate. Routed mode keeps
        # the gate as deployed by default (no send rates, no in-flight cap:
        # the queue read only).
        services.queue_routing = False
    warmup, timed = events[:1], events[1:]

    def run(event: dict[str, Any]) -> None:
        if mode == "naive":
            naive_batch(services, event, port)
            return
        answer = process_send_batch(event, BenchContext(), services)  # type: ignore[arg-type]
        if answer != {"batchItemFailures": []}:
            raise SystemExit(f"a batch failed: {answer}")

    for event in warmup:
        run(event)
    profiler: Any = None
    if profile_path:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
    start.wait()
    if profiler:
        profiler.start()
    began, cpu_began = time.perf_counter(), time.process_time()
    latencies = []
    for event in timed:
        batch_began = time.perf_counter()
        run(event)
        latencies.append(time.perf_counter() - batch_began)
    ended, cpu_used = time.perf_counter(), time.process_time() - cpu_began
    if profiler and profile_path:
        profiler.stop()
        Path(profile_path).write_text(profiler.output_text(unicode=False, color=False))
    results.put((began, ended, latencies, cpu_used))


def run_round(
    mode: str,
    port: int,
    events: list[list[dict[str, Any]]],
    profile_dir: str | None,
) -> tuple[float, list[float], float]:
    """The round's emails/s, its batch times, and the workers' CPU seconds per email."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    processes = [
        context.Process(
            target=worker_process,
            args=(
                mode,
                port,
                share,
                start,
                results,
                f"{profile_dir}/{mode}-{index}.txt" if profile_dir else None,
            ),
        )
        for index, share in enumerate(events)
    ]
    for process in processes:
        process.start()
    # Every process has warmed up (imports, pools, templates) before the start.
    time.sleep(0)
    _wait_until_warm(processes)
    start.set()
    outcomes = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        if process.exitcode != 0:
            raise SystemExit(f"a {mode} worker exited with {process.exitcode}")
    began = min(outcome[0] for outcome in outcomes)
    ended = max(outcome[1] for outcome in outcomes)
    emails = sum(len(outcome[2]) for outcome in outcomes) * BATCH_SIZE
    latencies = [latency for outcome in outcomes for latency in outcome[2]]
    cpu_per_email = sum(outcome[3] for outcome in outcomes) / emails
    return emails / (ended - began), latencies, cpu_per_email


def _wait_until_warm(processes: list[Any]) -> None:
    # Spawned interpreters import and warm up in about a second or two; the
    # start event is set after that, so the timed part excludes start-up.
    time.sleep(4.0)
    for process in processes:
        if not process.is_alive():
            raise SystemExit("a worker died while warming up")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fast-batches", type=int, default=60, help="per worker per round")
    parser.add_argument("--naive-batches", type=int, default=15, help="per worker per round")
    parser.add_argument("--profile", metavar="DIR", help="write a pyinstrument profile per worker")
    parser.add_argument("--modes", default="fast,signed,naive", help="comma-separated")
    parser.add_argument("--ed25519", action="store_true", help="signed mode adds Ed25519")
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]

    prepare_database(DATABASE_URL, REDIS_URL)
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    counts = context.Array("q", 3)
    sink = context.Process(target=run_sink, args=(ready, stop, counts), daemon=True)
    sink.start()
    port = int(ready.get(timeout=30))
    services = build_services(DATABASE_URL, REDIS_URL, TEMPLATES, port, reuse=True)
    client_id = new_client(services)
    if "signed" in modes:
        register_signing_domain(services, client_id, ed25519=args.ed25519)
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    latencies: dict[str, list[float]] = {mode: [] for mode in modes}
    sink_cpu_ms: dict[str, int] = dict.fromkeys(modes, 0)
    sink_messages: dict[str, int] = dict.fromkeys(modes, 0)
    # CPU per email is steadier than the rate when something else shares the
    # cores: it shows what the pipeline costs, not what it was given.
    worker_cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for _ in range(args.rounds):
            for mode in modes:
                per_worker = args.naive_batches if mode == "naive" else args.fast_batches
                # One warm-up batch per worker, then the timed ones.
                shares = [
                    queue_events(services, client_id, per_worker + 1) for _ in range(args.workers)
                ]
                time.sleep(0.2)
                cpu_before, messages_before = counts[2], counts[0]
                rate, batch_times, cpu_per_email = run_round(mode, port, shares, args.profile)
                worker_cpu[mode].append(cpu_per_email)
                time.sleep(0.2)
                sink_cpu_ms[mode] += counts[2] - cpu_before
                sink_messages[mode] += counts[0] - messages_before
                rates[mode].append(rate)
                latencies[mode].extend(batch_times)
    finally:
        stop.set()
        sink.join(timeout=10)

    print(
        f"worker pipeline, {args.workers} worker processes on {os.cpu_count()} cores, "
        f"batches of {BATCH_SIZE}, sink: the bench's asyncio responder on 127.0.0.1; "
        f"{args.rounds} rounds, modes alternating; load average before: "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'mode':<8}{'emails':>8}{'emails/s med':>14}{'min':>8}{'max':>8}"
        f"{'batch ms p50':>14}{'p99':>8}{'sink CPU µs/email':>19}{'worker CPU µs/email':>21}"
    )
    medians = {}
    for mode in modes:
        medians[mode] = statistics.median(rates[mode])
        emails = len(latencies[mode]) * BATCH_SIZE
        print(
            f"{mode:<8}{emails:>8}{medians[mode]:>14.0f}{min(rates[mode]):>8.0f}"
            f"{max(rates[mode]):>8.0f}{statistics.median(latencies[mode]) * 1000:>14.1f}"
            f"{percentile(latencies[mode], 0.99) * 1000:>8.1f}"
            f"{sink_cpu_ms[mode] * 1000 / max(1, sink_messages[mode]):>19.0f}"
            f"{statistics.median(worker_cpu[mode]) * 1e6:>21.0f}"
        )
    if "fast" in medians and "naive" in medians:
        print(
            f"fast / naive = x{medians['fast'] / medians['naive']:.2f} "
            "(targets: >= 800 emails/s and >= x3.5)"
        )
    for gated in ("routed", "gated"):
        if "fast" in medians and gated in medians:
            cpu = {mode: statistics.median(worker_cpu[mode]) for mode in ("fast", gated)}
            print(
                f"{gated} / fast: rate {medians[gated] / medians['fast'] - 1:+.1%}, worker CPU "
                f"per email {cpu[gated] / cpu['fast'] - 1:+.1%} (target: within 10 %)"
            )
    if "fast" in medians and "signed" in medians:
        cpu = {mode: statistics.median(worker_cpu[mode]) for mode in ("fast", "signed")}
        print(
            f"signed / fast: rate {medians['signed'] / medians['fast'] - 1:+.1%}, worker CPU "
            f"per email {cpu['signed'] / cpu['fast'] - 1:+.1%} (target: rate at most 15 % lower)"
        )


def register_signing_domain(services: Services, client_id: uuid.UUID, *, ed25519: bool) -> None:
    """The bench client's From domain, with its DKIM key(s), as POST /v1/domains makes them."""
    import dataclasses

    from mailroom.domain.tenancy import SYSTEM_ACTOR
    from mailroom.services import sending_domains

    policy = dataclasses.replace(services.domain_policy, ses=None, ed25519=ed25519)
    sending_domains.register_domain(
        services.uow(), policy, client_id, "acme.example.com", actor=SYSTEM_ACTOR
    )


if __name__ == "__main__":
    main()
