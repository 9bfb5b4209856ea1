"""POST /v1/send on a warm instance: auth + rate limit + quota + validation + insert, no queue.

Builds the send function's resolver exactly as functions/send/app.py does
(client gate included) on the real PostgreSQL and Redis, with a queue that
does nothing (so SQS is not measured), warms it up, then times 5,000
requests through ``resolve``: the whole handler's self time. The parts are
then timed alone on the same warm instance, and a cold verification (empty
credential cache: Redis + database + argon2id at the configured cost) and a
bare argon2id verify are timed 20 times each. The SQS send the handler leaves
out is timed on its own (boto3 to an in-process moto server, 300 sends).
Log lines still go through the Powertools logger, to /dev/null. Bounded to
about two minutes. MAILROOM_BENCH_PROFILE=<file> also writes a pyinstrument
profile of 1,000 warm requests there. ``--whole-only --requests N`` times N
requests and nothing else (bench/instructions.py runs it under callgrind).

Needs PostgreSQL and Redis on 127.0.0.1. The database (created and migrated
if missing) and Redis database are MAILROOM_BENCH_DATABASE_URL (default
.../mailroom_bench) and MAILROOM_BENCH_REDIS_URL (default redis://127.0.0.1:6379/14).

    .venv/bin/python bench/api_send.py [--requests 5000] [--whole-only]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "shared"), str(REPO)]

import boto3  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from bench import _observability as observability  # noqa: E402
from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head  # noqa: E402
from mailroom.adapters.queue import MessageQueue, SqsMessageQueue  # noqa: E402
from mailroom.adapters.tenancy import Bucket  # noqa: E402
from mailroom.bootstrap import Services, bootstrap  # noqa: E402
from mailroom.config import Settings  # noqa: E402
from mailroom.domain.commands import SendRequest  # noqa: E402
from mailroom.domain.model import Message  # noqa: E402
from mailroom.entrypoints.api import create_api, send_routes  # noqa: E402
from mailroom.entrypoints.client_gate import ClientGate  # noqa: E402
from mailroom.entrypoints.observability import logger  # noqa: E402
from mailroom.services import suppression  # noqa: E402
from mailroom.services.authentication import (  # noqa: E402
    Authenticator,
    VerifiedCredentialCache,
)
from mailroom.services.clients import register_client  # noqa: E402
from mailroom.services.quotas import QuotaCharge  # noqa: E402
from mailroom.services.templates import check_props  # noqa: E402
from tests.events import FakeLambdaContext, load_event, with_headers  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench"
)
REDIS_URL = os.environ.get("MAILROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
REQUESTS = 5000
PART_SAMPLES = 2000
COLD_SAMPLES = 20
# moto's queue slows as it fills (it keeps every message): a few hundred only.
SQS_SAMPLES = 300
_AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


class NoQueue(MessageQueue):
    """Accepts and forgets: the SQS send is not what this measures."""

    def enqueue(self, message_id: uuid.UUID, trace_id: str) -> None:
        return None


def timed(action: Callable[[], object], samples: int) -> list[float]:
    """Milliseconds per call."""
    results = []
    for _ in range(samples):
        started = time.perf_counter_ns()
        action()
        results.append((time.perf_counter_ns() - started) / 1e6)
    return results


def row(label: str, millis: list[float], target: str = "") -> str:
    ordered = sorted(millis)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{label:<46}{statistics.median(ordered):>9.3f}{p99:>9.3f}{len(ordered):>7}  {target}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=REQUESTS, help="warm requests timed")
    parser.add_argument(
        "--whole-only", action="store_true", help="time the whole handler only: no parts, no cold"
    )
    args = parser.parse_args()
    requests: int = args.requests
    observability.apply()
    ensure_database_exists(DATABASE_URL)
    upgrade_to_head(DATABASE_URL)
    settings = Settings(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        templates_dir=REPO / "templates",
        # As a deployed stack has one: compiled code is then shared through Redis.
        template_code_signing_key=SecretStr("bench-template-code-signing-key-0123456789"),
        # The longest the settings allow. Under callgrind 600 requests take
        # about a minute: with the default 60 s, whether the cached
        # verification expired mid-run (one more argon2id verify, ~200 M
        # instructions, +0.4 M per request) decided the figure (issue 14).
        verified_credential_ttl_seconds=3600,
    )
    services: Services = bootstrap(settings, queue=NoQueue())
    services.credential_versions  # noqa: B018 - built before timing starts
    registered = register_client(
        services.uow(),
        services.hasher,
        name=f"bench-{uuid.uuid4().hex[:8]}",
        rate_limit=1_000_000,
        quota_limit=100_000_000,
    )
    key, secret = registered.api_key, registered.api_secret
    app = create_api(
        [send_routes(lambda: services)],
        max_request_bytes=lambda: settings.max_request_bytes,
        client_gate=ClientGate(lambda: services),
        metrics=lambda: services.metrics,
    )
    event = load_event("send/send-welcome")
    with_headers(event, X_Api_Key=key, X_Api_Secret=secret)
    if observability.SWITCH in os.environ:
        # The canonical event's fixed X-Ray root would make every request
        # one trace, sampled always or never: each request starts its own.
        with_headers(event, X_Amzn_Trace_Id=None)
    context = FakeLambdaContext()
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        handler = logger.registered_handler
        if hasattr(handler, "setStream"):
            handler.setStream(devnull)

        # Each request gets its own copy of the event (the resolver may change
        # it), made before the timing starts: copying it was ~1 ms of the time.
        copies: list[dict[str, Any]] = []

        def ready(count: int) -> None:
            copies.extend(copy.deepcopy(event) for _ in range(count))

        def send() -> None:
            response = app.resolve(copies.pop(), context)
            if response["statusCode"] != 202:
                raise SystemExit(f"send answered {response['statusCode']}: {response['body']}")

        ready(200)
        timed(send, 200)  # warm: pools, caches, the first verification
        if os.environ.get("MAILROOM_BENCH_PROFILE"):
            # Where the handler's time goes: a pyinstrument profile of 1000
            # warm requests, written to the file named, then the usual run.
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            ready(1000)
            profiler.start()
            timed(send, 1000)
            profiler.stop()
            Path(os.environ["MAILROOM_BENCH_PROFILE"]).write_text(
                profiler.output_text(unicode=False, color=False)
            )
        ready(requests)
        whole = timed(send, requests)
        if args.whole_only:
            print(row("whole handler (resolve), self time", whole, "p99 <= 5"))
            return
        parts = _parts(services, key, secret, event)
        cold = _cold(services, key, secret)

    print(
        f"POST /v1/send, warm instance, no queue send ({requests} requests; parts "
        f"{PART_SAMPLES} each; cold {COLD_SAMPLES} each)"
    )
    print(f"{'ms':<46}{'median':>9}{'p99':>9}{'n':>7}  target")
    print(row("whole handler (resolve), self time", whole, "p99 <= 5"))
    for label, millis, target in parts:
        print(row(label, millis, target))
    for label, millis, target in cold:
        print(row(label, millis, target))
    print(
        f"argon2id: t={settings.argon2_time_cost}, m={settings.argon2_memory_cost_kib} KiB, "
        f"p={settings.argon2_parallelism}"
    )


def _parts(
    services: Services, key: str, secret: str, event: dict[str, Any]
) -> list[tuple[str, list[float], str]]:
    client = services.authenticator.authenticate(key, secret).caller.client
    body = str(event["body"])
    request = SendRequest.model_validate_json(body)
    template = request.template or ""  # the bench event names a template
    bucket = Bucket(f"client:{client.id}", client.rate_limit)

    def insert() -> None:
        message = Message(
            id=uuid.uuid4(),
            client_id=client.id,
            trace_id="bench",
            template_name=template,
            from_address="noreply@example.com",
            to=request.to,
            props=request.props,
        )
        # What accept_message does: one statement checks the suppressions and
        # writes the row, its event and its recipients; then the commit.
        with services.uow() as uow:
            uow.add_accepted_unless_suppressed(
                message, {"trace_id": "bench"}, suppression.recipient_rows(message)
            )
            uow.commit()

    return [
        (
            "auth, warm (HMAC + cache + version GET)",
            timed(lambda: services.authenticator.authenticate(key, secret), PART_SAMPLES),
            "<= 0.5",
        ),
        (
            "rate limit (token bucket script)",
            timed(lambda: services.rate_limiter.take(bucket), PART_SAMPLES),
            "",
        ),
        (
            "quota charge (check-and-count script)",
            timed(
                lambda: QuotaCharge(
                    services.quota, services.uow, client, now=datetime.now(UTC)
                ).take(),
                PART_SAMPLES,
            ),
            "",
        ),
        (
            "body validation (SendRequest)",
            timed(lambda: SendRequest.model_validate_json(body), PART_SAMPLES),
            "",
        ),
        ("suppression check + insert + commit", timed(insert, PART_SAMPLES), ""),
        (
            "template lookup (file template, cached)",
            timed(lambda: services.templates.get(template), PART_SAMPLES),
            "",
        ),
        (
            "props: schema + trial render",
            timed(
                lambda: check_props(
                    services.renderer, services.templates.get(template), request.props
                ),
                PART_SAMPLES,
            ),
            "",
        ),
        ("SQS SendMessage to moto (client + moto)", _sqs_times(), "excluded"),
        (
            "json of the answer",
            timed(lambda: json.dumps({"id": str(uuid.uuid4())}), PART_SAMPLES),
            "",
        ),
    ]


def _sqs_times() -> list[float]:
    """The queue send alone, through boto3 to an in-process moto server.

    moto runs in this process, so the figure includes its own handling (its
    threads share the GIL): an upper bound for the client's CPU, a lower one
    for AWS, where the call crosses the network.
    """
    from moto.server import ThreadedMotoServer

    # moto's server logs every request through werkzeug: not part of the table.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {name: os.environ.get(name) for name in _AWS_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        queue = SqsMessageQueue(
            str(
                boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="bench-send")[
                    "QueueUrl"
                ]
            ),
            "us-east-1",
        )
        timed(lambda: queue.enqueue(uuid.uuid4(), "bench"), 50)
        return timed(lambda: queue.enqueue(uuid.uuid4(), "bench"), SQS_SAMPLES)
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _cold(services: Services, key: str, secret: str) -> list[tuple[str, list[float], str]]:
    services.authenticator.authenticate(key, secret)

    def cold_authenticate() -> None:
        # A new instance: empty cache, so Redis + database + argon2.
        Authenticator(
            services.uow,
            services.hasher,
            services.credential_versions,
            VerifiedCredentialCache(ttl_seconds=60, max_entries=10),
            last_used_interval_seconds=3600,
        ).authenticate(key, secret)

    secret_hash = _secret_hash(services, key)
    return [
        (
            "auth, cold (empty cache: Redis + DB + argon2)",
            timed(cold_authenticate, COLD_SAMPLES),
            "",
        ),
        (
            "argon2id verify alone",
            timed(lambda: services.hasher.verify(secret_hash, secret), COLD_SAMPLES),
            "",
        ),
    ]


def _secret_hash(services: Services, key: str) -> str:
    with services.uow() as uow:
        stored = uow.api_keys.get(key)
    assert stored is not None
    return stored.secret_hash


if __name__ == "__main__":
    main()
