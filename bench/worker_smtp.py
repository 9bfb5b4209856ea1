"""The worker's path per message, batches of 10 to an SMTP sink on loopback: reuse on vs off.

Each batch is one ``process_send_batch`` call on a Lambda SQS event of 10
records, exactly as the worker function runs it: load the row from
PostgreSQL, the client's provider order, render the welcome template and
inline its CSS, build the MIME, ask the Redis-backed breaker, send over SMTP,
record the outcome and its event. The sink is aiosmtpd in its own process
(it must not share our GIL). "reuse on" keeps one SMTP connection per batch,
as the worker does; "reuse off" opens one per message. Both run in plain
text and with STARTTLS (a throwaway self-signed certificate that this process
trusts through SSL_CERT_FILE), since a real relay is reached over TLS. The
four modes take turns batch by batch, so load from elsewhere on the machine
hits them alike. SQS itself is not in the loop (Lambda's poller receives and
deletes; the worker only reads the event). Prints per-batch wall time
(median, p99) and emails/s.

Needs PostgreSQL and Redis on 127.0.0.1: MAILROOM_BENCH_DATABASE_URL (default
postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_worker, recreated
each run) and MAILROOM_BENCH_REDIS_URL (default redis://127.0.0.1:6379/14;
only the breaker keys are touched). Bounded to about a minute.

    .venv/bin/python bench/worker_smtp.py [--batches 40]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import ipaddress
import json
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shared"))
sys.path.insert(0, str(REPO))  # for bench._worker_bench
# Metrics stay off outside Lambda; the logger keeps its usual INFO lines (part
# of the path), sent to /dev/null while timing.
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

from bench._worker_bench import (  # noqa: E402
    BenchContext,
    build_services,
    new_client,
    prepare_database,
)
from mailroom.adapters.providers.smtp import Security  # noqa: E402
from mailroom.bootstrap import Services  # noqa: E402
from mailroom.domain.model import EventType, Message  # noqa: E402
from mailroom.entrypoints.worker import process_send_batch  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_worker",
)
REDIS_URL = os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
BATCH_SIZE = 10
SECURITIES: tuple[Security, ...] = ("none", "starttls")
WARMUP_BATCHES = 3
TEMPLATES = REPO / "templates"
SAMPLE_EVENT = json.loads((REPO / "events" / "worker" / "sqs-batch.json").read_text())
SAMPLE_PROPS = json.loads((REPO / "templates" / "welcome" / "sample.json").read_text())


def run_sink(ready: Any, stop: Any, counts: Any, cert: str, key: str) -> None:
    """aiosmtpd accepting everything, STARTTLS offered; counts sessions and messages."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            # A STARTTLS session says EHLO twice; count the first only.
            if not session.ssl:
                with counts.get_lock():
                    counts[0] += 1
            session.host_name = hostname
            return responses

        async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: Any, session: Any, envelope: Any
        ) -> str:
            with counts.get_lock():
                counts[1] += 1
            return "250 Message accepted"

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    # aiosmtpd checks its listener by connecting to the port asked for: no 0.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port, tls_context=tls, server_hostname="sink"
    )
    controller.start()
    ready.put(port)
    stop.wait()
    controller.stop()
    asyncio.set_event_loop(None)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "sink.pem", folder / "sink.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def queue_batch(services: Services, client_id: uuid.UUID) -> dict[str, Any]:
    """Ten queued rows, as the send API leaves them, and the SQS event naming them."""
    template = SAMPLE_EVENT["Records"][0]
    records = []
    with services.uow() as uow:
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
            uow.messages.add(message)
            uow.messages.append_event(message.id, EventType.ACCEPTED, {})
            record = copy.deepcopy(template)
            record["messageId"] = str(uuid.uuid4())
            record["body"] = json.dumps({"message_id": str(message.id)})
            records.append(record)
        uow.commit()
    return {"Records": records}


@contextmanager
def stdout_to_devnull() -> Iterator[None]:
    # The worker's JSON log lines still get written (that cost is real in
    # Lambda), just not onto this table.
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def run_batch(services: Services, client_id: uuid.UUID) -> float:
    event = queue_batch(services, client_id)
    started = time.perf_counter()
    answer = process_send_batch(event, BenchContext(), services)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    if answer != {"batchItemFailures": []}:
        raise SystemExit(f"a batch failed: {answer}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="timed batches per mode")
    args = parser.parse_args()

    prepare_database(DATABASE_URL, REDIS_URL)
    folder = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
    cert, key = self_signed_certificate(folder)
    # Our TLS context trusts the sink's certificate (and only it).
    os.environ["SSL_CERT_FILE"] = str(cert)
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    counts = context.Array("q", 2)
    sink = context.Process(
        target=run_sink, args=(ready, stop, counts, str(cert), str(key)), daemon=True
    )
    sink.start()
    port = int(ready.get(timeout=30))
    try:
        modes: list[tuple[Security, bool]] = [
            (security, reuse) for security in SECURITIES for reuse in (True, False)
        ]
        services = {
            mode: build_services(
                DATABASE_URL, REDIS_URL, TEMPLATES, port, security=mode[0], reuse=mode[1]
            )
            for mode in modes
        }
        clients = {mode: new_client(services[mode]) for mode in modes}
        timings: dict[tuple[Security, bool], list[float]] = {mode: [] for mode in modes}
        sessions: dict[tuple[Security, bool], int] = dict.fromkeys(modes, 0)
        with stdout_to_devnull():
            for index in range(WARMUP_BATCHES + args.batches):
                # Rotate who goes first, so no mode always follows the same one.
                for mode in modes[index % 4 :] + modes[: index % 4]:
                    before = counts[0]
                    elapsed = run_batch(services[mode], clients[mode])
                    if index >= WARMUP_BATCHES:
                        timings[mode].append(elapsed)
                        sessions[mode] += counts[0] - before
    finally:
        stop.set()
        sink.join(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)

    print(
        f"worker path, batches of {BATCH_SIZE} to an aiosmtpd sink on 127.0.0.1 "
        f"(PostgreSQL + Redis breakers; modes interleaved; {WARMUP_BATCHES} warm-up rounds)"
    )
    print(
        f"{'security':<10}{'reuse':<7}{'batches':>8}{'batch ms p50':>14}{'p99':>9}"
        f"{'ms/email':>10}{'emails/s p50':>14}{'emails/s all':>14}{'sessions/batch':>16}"
    )
    rates: dict[tuple[Security, bool], float] = {}
    for mode in modes:
        ordered = sorted(timings[mode])
        p50 = statistics.median(ordered)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        rates[mode] = BATCH_SIZE / p50
        print(
            f"{mode[0]:<10}{'on' if mode[1] else 'off':<7}{len(ordered):>8}{p50 * 1000:>14.1f}"
            f"{p99 * 1000:>9.1f}{p50 * 1000 / BATCH_SIZE:>10.1f}{rates[mode]:>14.0f}"
            f"{BATCH_SIZE * len(ordered) / sum(ordered):>14.0f}"
            f"{sessions[mode] / len(ordered):>16.1f}"
        )
    for security in SECURITIES:
        on, off = rates[(security, True)], rates[(security, False)]
        print(f"{security}: reuse on / off = x{on / off:.2f} emails/s (median batches)")


if __name__ == "__main__":
    main()
