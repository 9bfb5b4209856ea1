"""The chaos run (issue 7): mail through the API while everything underneath fails, then count.

Starts its own PostgreSQL (initdb in a temp dir, its own port), Redis, moto
(SQS) and two sinks that record every Message-ID they are handed: the
primary SMTP server and the secondary provider (the Mailgun HTTP API, the
only second provider that can run on loopback; the chain fails over to it).
The worker is the local runner's SQS poller and WorkerFunction in a separate
process (chaos/worker.py). Then it sends N messages through the send API
handler (with Idempotency-Key retries, as a careful client would) while it:

- SIGKILLs the worker at random moments (restarting it at once);
- restarts Redis once and PostgreSQL once;
- makes the primary SMTP server refuse connections for a while;
- puts a second copy of about 5% of queue messages on the queue;
- runs the reconciler every few seconds (the schedule, compressed).

It waits until every accepted message is sent, failed, or waiting for a
known next attempt (bounded in time), reads the sinks and the database, and
prints: accepted / sent exactly once / sent more than once (inside the
documented window, and not) / failed with reason / still queued with a next
attempt / lost. Exit status 1 on any lost message or unexplained duplicate.

    make chaos      # 2,000 messages, 10 kills, 60 s SMTP outage
    make chaos-ci   # 200 messages, 3 kills, 10 s outage; a few minutes
"""

# ruff: noqa: S603, S311
# S603: every subprocess here is a fixed local binary (initdb, pg_ctl,
# redis-server, moto_server, this interpreter), never input. S311: the
# randomness only picks chaos moments.
from __future__ import annotations

import argparse
import contextlib
import email
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import boto3
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from aws_lambda_powertools.utilities.typing import LambdaContext
from sqlalchemy import create_engine, text

REPO_ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
MESSAGE_ID = re.compile(r"<([0-9a-f-]{36})@")
# The documented window (docs/architecture.md, "Reliability"): a duplicate
# is explained when the worker was killed or PostgreSQL went down within
# this long after the first copy reached a sink, before its row said sent.
WINDOW_SECONDS = 20.0
# The reconciler's staleness in the run, and how late past its expected next
# attempt an unfinished message may be before it counts as lost (two passes).
RECONCILE_STALE_SECONDS = 30
OVERDUE_GRACE_SECONDS = 15
# Concurrent API clients.
SENDERS = 16


@dataclass(frozen=True, slots=True)
class Profile:
    messages: int
    kills: int
    smtp_outage_seconds: float
    send_seconds: float  # how long sending the N messages is spread over
    settle_seconds: float  # how long to wait afterwards for everything to settle
    duplicate_rate: float = 0.05


PROFILES = {
    "ci": Profile(
        messages=200, kills=3, smtp_outage_seconds=10, send_seconds=20, settle_seconds=90
    ),
    # Paced at ~7 messages/s: about what one local worker sends while it is
    # being killed, so the queue stays short (moto's receive slows down with
    # thousands of messages queued, which would measure moto, not Mailroom).
    "full": Profile(
        messages=2000, kills=10, smtp_outage_seconds=60, send_seconds=300, settle_seconds=240
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(text_: str) -> None:
    print(f"[chaos {datetime.now(UTC):%H:%M:%S}] {text_}", flush=True)


# --- the private backing services -------------------------------------------


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not candidates:
            raise SystemExit("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = candidates[-1].parent
        self.dir = root / "pg"
        self.port = free_port()
        self.url = f"postgresql+pg8000://postgres@127.0.0.1:{self.port}/mailroom_chaos"

    def init(self) -> None:
        self.dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.dir.parent, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.dir / "data"),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.start()

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        subprocess.run(
            _as_postgres(
                [
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.dir / "data"),
                    "-l",
                    str(self.dir / "log"),
                    "-o",
                    options,
                    "-w",
                    *args,
                ]
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        # -m fast: connections are cut, as in a failover or a crash restart.
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "immediate", "stop")


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = root
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "/usr/bin/redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class Moto:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def _wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


# --- the sinks -----------------------------------------------------------------


@dataclass
class Receipts:
    """Every Message-ID a sink was handed, with when."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[tuple[str, str, float]] = field(default_factory=list)  # (id, sink, at)

    def add(self, raw: bytes, sink: str) -> None:
        parsed = email.message_from_bytes(raw, policy=policy.default)
        match = MESSAGE_ID.search(str(parsed.get("Message-ID", "")))
        if match is not None:
            with self.lock:
                self.seen.append((match.group(1), sink, time.time()))


class SmtpHandler:
    def __init__(self, receipts: Receipts) -> None:
        self.receipts = receipts

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.receipts.add(bytes(envelope.original_content or b""), "smtp")
        return "250 Message accepted"


class PrimarySmtp:
    """aiosmtpd on a fixed port; ``refuse`` closes the port so connections are refused."""

    def __init__(self, receipts: Receipts) -> None:
        self.port = free_port()
        self.handler = SmtpHandler(receipts)
        self.controller: Controller | None = None

    def accept(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def refuse(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def mailgun_sink(receipts: Receipts) -> ThreadingHTTPServer:
    """Mailgun's POST /v3/<domain>/messages.mime, recording the MIME's Message-ID."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            form = email.message_from_bytes(
                f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body,
                policy=policy.HTTP,
            )
            for part in form.iter_parts() if form.is_multipart() else []:
                if part.get_param("name", header="content-disposition") == "message":
                    payload = part.get_payload(decode=True)
                    if isinstance(payload, bytes):
                        receipts.add(payload, "mailgun")
                    elif part.is_multipart() or part.get_content_type() == "message/rfc822":
                        inner = part.get_payload()
                        if isinstance(inner, list) and inner and not isinstance(inner[0], str):
                            receipts.add(inner[0].as_bytes(), "mailgun")
            answer = json.dumps({"id": f"<{uuid.uuid4()}@chaos>", "message": "Queued."}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            # A worker killed mid-request (the chaos itself) leaves no one to
            # answer: the message was taken, which is what the run counts.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- the worker process ------------------------------------------------------------


class WorkerProcess:
    def __init__(self, environment: dict[str, str], log_path: Path) -> None:
        self.environment = environment
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.kills: list[float] = []

    def start(self) -> None:
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chaos.worker"],
                cwd=REPO_ROOT,
                env=self.environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills.append(time.time())
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


# --- the run --------------------------------------------------------------------------


@dataclass
class Outcome:
    accepted: set[uuid.UUID] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)
    pg_down: list[tuple[float, float]] = field(default_factory=list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--kills", type=int)
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    base = PROFILES[arguments.profile]
    profile = Profile(
        messages=arguments.messages or base.messages,
        kills=arguments.kills if arguments.kills is not None else base.kills,
        smtp_outage_seconds=base.smtp_outage_seconds,
        send_seconds=base.send_seconds,
        settle_seconds=base.settle_seconds,
    )
    random.seed(arguments.seed)
    with tempfile.TemporaryDirectory(prefix="mailroom-chaos-") as root_name:
        os.chmod(root_name, 0o755)  # noqa: S103 - the postgres user must reach its data dir
        return _run(profile, Path(root_name))


def _run(profile: Profile, root: Path) -> int:
    started = time.monotonic()
    # Dropped connections during the restarts are expected; the report is what counts.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    pg, redis_server, moto = PrivatePostgres(root), PrivateRedis(root), Moto()
    receipts = Receipts()
    primary = PrimarySmtp(receipts)
    secondary = mailgun_sink(receipts)
    worker: WorkerProcess | None = None
    try:
        pg.init()
        redis_server.start()
        moto.start()
        primary.accept()
        log(
            f"postgres :{pg.port}, redis :{redis_server.port}, "
            f"moto :{moto.port}, smtp :{primary.port}"
        )
        environment = _environment(pg.url, redis_server.url, moto.url, primary.port, secondary)
        os.environ.update(environment)
        sys.path[:0] = [str(REPO_ROOT / "shared"), str(REPO_ROOT)]
        from devstack.backing_services import prepare_database

        prepare_database(pg.url)
        queue_url, queue_arn = _create_queues(environment)
        environment.update(
            QUEUE_URL=queue_url,
            CHAOS_QUEUE_URL=queue_url,
            CHAOS_QUEUE_ARN=queue_arn,
            CHAOS_VISIBILITY_TIMEOUT=environment["CHAOS_VISIBILITY_TIMEOUT"],
        )
        os.environ.update(environment)
        worker = WorkerProcess(environment, root / "worker.log")
        worker.start()
        outcome = Outcome()
        _chaos(profile, pg, redis_server, primary, worker, outcome, queue_url)
        return _report(profile, pg.url, receipts, worker.kills, outcome, started)
    finally:
        if worker is not None:
            worker.stop()
        primary.refuse()
        secondary.shutdown()
        moto.stop()
        redis_server.stop()
        pg.stop()
        if worker is not None and os.environ.get("CHAOS_KEEP_LOG"):
            shutil.copy(root / "worker.log", os.environ["CHAOS_KEEP_LOG"])


def _environment(
    database_url: str,
    redis_url: str,
    aws_url: str,
    smtp_port: int,
    secondary: ThreadingHTTPServer,
) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT / 'shared'}:{REPO_ROOT}",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "AWS_ENDPOINT_URL": aws_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "TEMPLATES_DIR": str(REPO_ROOT / "templates"),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_TIMEOUT_SECONDS": "3",
        "PROVIDER_ORDER": "smtp,mailgun",
        "MAILGUN_API_KEY": "chaos-key",
        "MAILGUN_DOMAIN": "chaos.test",
        "MAILGUN_BASE_URL": f"http://127.0.0.1:{secondary.server_port}",
        "DEFAULT_FROM": "Mailroom <noreply@chaos.test>",
        "MAX_SEND_ATTEMPTS": "5",
        "RETRY_BASE_DELAY_SECONDS": "2",
        "RETRY_MAX_DELAY_SECONDS": "8",
        # Shorter than production so a killed worker's claims and records come
        # back within the run: the lease still exceeds any batch's duration.
        "CLAIM_LEASE_SECONDS": "25",
        "CHAOS_VISIBILITY_TIMEOUT": "30",
        "RECONCILE_STALE_SECONDS": str(RECONCILE_STALE_SECONDS),
        # Outages make every component log loudly; the report is what counts.
        "POWERTOOLS_LOG_LEVEL": "CRITICAL",
    }


def _create_queues(environment: dict[str, str]) -> tuple[str, str]:
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=environment["AWS_ENDPOINT_URL"])
    dlq = sqs.create_queue(QueueName="chaos-send-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    environment["DEAD_LETTER_QUEUE_URL"] = dlq
    url = sqs.create_queue(
        QueueName="chaos-send",
        Attributes={
            "VisibilityTimeout": environment["CHAOS_VISIBILITY_TIMEOUT"],
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "8"}),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return str(url), str(arn)


def _chaos(
    profile: Profile,
    pg: PrivatePostgres,
    redis_server: PrivateRedis,
    primary: PrimarySmtp,
    worker: WorkerProcess,
    outcome: Outcome,
    queue_url: str,
) -> None:
    from mailroom.bootstrap import bootstrap
    from mailroom.config import Settings
    from mailroom.entrypoints.api import create_api, send_routes
    from mailroom.services.clients import register_client

    settings = Settings()
    services = bootstrap(settings)
    client = register_client(
        services.uow(), services.hasher, name="chaos", rate_limit=100_000, quota_limit=10_000_000
    )
    # Powertools keeps the current event in a class attribute (Lambda runs one
    # event per container at a time), so one process resolves one request at
    # a time, as the local runner's invocation lock does; the clients' waits
    # between retries run in parallel.
    api = create_api(
        [send_routes(lambda: services)], max_request_bytes=lambda: settings.max_request_bytes
    )
    invocation = threading.Lock()

    sqs = boto3.client("sqs", region_name=REGION)
    sample = json.loads((REPO_ROOT / "events/send/send-welcome.json").read_text())
    request = json.loads(sample["body"])

    def send_one(index: int) -> None:
        key = f"chaos-{index}"
        body = {**request, "to": f"user{index}@example.com", "metadata": {"n": str(index)}}
        event = json.loads(json.dumps(sample))
        event["body"] = json.dumps(body)
        event["headers"] = {
            **event["headers"],
            "X-Api-Key": client.api_key,
            "X-Api-Secret": client.api_secret,
            "Idempotency-Key": key,
        }
        event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
        # A careful client: retry with the same key until an answer that is not 5xx/409.
        for attempt in range(60):
            try:
                with invocation:
                    response = api.resolve(event, cast(LambdaContext, _Context()))
                status = int(response["statusCode"])
            except Exception as error:  # noqa: BLE001 - an outage seen by the client
                status, response = 599, {"body": json.dumps({"error": str(error)})}
            if status == 202:
                message_id = uuid.UUID(json.loads(response["body"])["id"])
                outcome.accepted.add(message_id)
                if random.random() < profile.duplicate_rate:
                    # At-least-once delivery, simulated: a second copy of the record.
                    with contextlib.suppress(Exception):
                        sqs.send_message(
                            QueueUrl=queue_url,
                            MessageBody=json.dumps({"message_id": str(message_id)}),
                        )
                return
            try:
                code = json.loads(response["body"])["error"]["code"]
            except (KeyError, TypeError, ValueError):
                code = "?"
            outcome.refused[f"{status} {code}"] += 1
            if status < 500 and status != 409:
                return
            time.sleep(min(0.2 * (attempt + 1), 2.0))

    reconciling = threading.Event()

    def reconciler_loop() -> None:
        from mailroom.entrypoints.reconciler import run_reconciler

        while not reconciling.wait(5):
            with contextlib.suppress(Exception):
                run_reconciler({}, cast(LambdaContext, _Context()), services)

    threading.Thread(target=reconciler_loop, daemon=True).start()

    span = profile.send_seconds
    actions: list[tuple[float, str]] = [
        (random.uniform(1, span), "kill") for _ in range(profile.kills)
    ]
    actions += [
        (span * 0.3, "redis"),
        (span * 0.55, "postgres"),
        (span * 0.2, "smtp-off"),
        (span * 0.2 + profile.smtp_outage_seconds, "smtp-on"),
    ]
    actions.sort()

    def chaos_loop() -> None:
        begin = time.monotonic()
        for at, action in actions:
            time.sleep(max(0.0, at - (time.monotonic() - begin)))
            log(f"chaos: {action}")
            if action == "kill":
                worker.kill()
            elif action == "redis":
                redis_server.restart()
            elif action == "postgres":
                down = time.time()
                pg.restart()
                outcome.pg_down.append((down, time.time()))
            elif action == "smtp-off":
                primary.refuse()
            elif action == "smtp-on":
                primary.accept()

    chaos_thread = threading.Thread(target=chaos_loop, daemon=True)
    chaos_thread.start()
    log(f"sending {profile.messages} messages over {span:.0f} s")
    pace = span / profile.messages
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        for index in range(profile.messages):
            pool.submit(send_one, index)
            time.sleep(pace)
    chaos_thread.join()
    log(f"accepted {len(outcome.accepted)}; waiting up to {profile.settle_seconds:.0f} s to settle")
    deadline = time.monotonic() + profile.settle_seconds
    engine = create_engine(settings.database_url)
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception), engine.connect() as connection:
            pending = connection.execute(
                text("SELECT count(*) FROM messages WHERE status IN ('queued', 'sending')")
            ).scalar_one()
            if pending == 0:
                break
        time.sleep(2)
    reconciling.set()
    engine.dispose()


class _Context:
    function_name = "chaos-send"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:chaos-send"
    aws_request_id = "chaos"

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def _report(
    profile: Profile,
    database_url: str,
    receipts: Receipts,
    kills: list[float],
    outcome: Outcome,
    started: float,
) -> int:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = {
            row.id: row
            for row in connection.execute(
                text(
                    "SELECT id, status, last_error, next_attempt_at, lease_expires_at, updated_at "
                    "FROM messages"
                )
            )
        }
    engine.dispose()
    copies: Counter[str] = Counter(message_id for message_id, _, _ in receipts.seen)
    first_seen: dict[str, float] = {}
    for message_id, _, at in receipts.seen:
        first_seen.setdefault(message_id, at)
    disruptions = kills + [down for down, _ in outcome.pg_down]

    exactly_once = duplicates_window = duplicates_unexplained = 0
    failed = pending = lost = 0
    now = datetime.now(UTC)
    lost_ids: list[str] = []
    next_attempts: list[str] = []
    reasons: Counter[str] = Counter()
    for accepted_id in outcome.accepted:
        key = str(accepted_id)
        row = rows.get(accepted_id)
        count = copies.get(key, 0)
        if count == 1:
            exactly_once += 1
        elif count > 1:
            at = first_seen[key]
            if any(at - 1.0 <= moment <= at + WINDOW_SECONDS for moment in disruptions):
                duplicates_window += 1
            else:
                duplicates_unexplained += 1
        if count:
            continue
        if row is not None and row.status == "failed" and row.last_error:
            failed += 1
            reasons[str(row.last_error).split(":")[0]] += 1
        elif row is not None and row.status in ("queued", "sending"):
            # On its way: its next attempt is the retry's due time, the lease's
            # end, or the reconciler's next pass, whichever applies.
            nxt = max(
                t
                for t in (
                    row.next_attempt_at,
                    row.lease_expires_at,
                    row.updated_at + timedelta(seconds=RECONCILE_STALE_SECONDS),
                )
                if t is not None
            )
            if nxt >= now - timedelta(seconds=OVERDUE_GRACE_SECONDS):
                pending += 1
                next_attempts.append(nxt.isoformat())
            else:
                # Overdue: nothing will move it, "queued forever".
                lost += 1
                lost_ids.append(f"{key} (overdue {row.status})")
        else:
            # No row, a row that says sent that no sink received, or failed
            # without a reason.
            lost += 1
            lost_ids.append(f"{key} ({row.status if row is not None else 'no row'})")

    print()
    print(f"chaos run: {profile.messages} messages, {len(kills)} worker kills, ", end="")
    print(
        "Redis and PostgreSQL restarted once, "
        f"primary SMTP refused {profile.smtp_outage_seconds:.0f} s"
    )
    print(f"  client answers other than 202 (retried): {dict(outcome.refused)}")
    table = [
        ("accepted", len(outcome.accepted)),
        ("sent exactly once", exactly_once),
        ("sent more than once, inside the documented window", duplicates_window),
        ("sent more than once, unexplained", duplicates_unexplained),
        ("failed with reason", failed),
        ("still queued with a next attempt", pending),
        ("lost", lost),
    ]
    for label, value in table:
        print(f"  {label:<52} {value:>6}")
    if reasons:
        print(f"  failure reasons: {dict(reasons)}")
    if next_attempts:
        print(f"  next attempts of those still queued (first 5): {sorted(next_attempts)[:5]}")
    if lost_ids:
        print(f"  lost: {', '.join(lost_ids[:20])}")
    print(f"  wall time {time.monotonic() - started:.0f} s")
    return 1 if lost or duplicates_unexplained else 0


if __name__ == "__main__":
    raise SystemExit(main())
