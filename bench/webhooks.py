"""Outbound webhooks (issue 19): signing cost, delivery rate, and a slow endpoint's effect.

A receiver runs in its own process on 127.0.0.1 (paths /fast<n> answer at
once, /slow after 5 s): by default bench/_lean_receiver.py, which costs the
shared cores little, or the tests' http.server receiver (``--receiver tests``).
Events are written as message_events rows, so the trigger fills the outbox
as in production; the relay fans them out; one dispatcher (one container's
worth: 32 threads, 4 lanes per endpoint) sends them in batches of 250 (10 SQS
messages of 25 ids), signing each request.
The rate counts deliveries to the fast endpoints from the first batch to
the last fast one settled in PostgreSQL. The queue is an in-memory list here
(the relay's and the dispatcher's SQS calls are not what is measured).

Needs PostgreSQL on 127.0.0.1 (MAILROOM_BENCH_DATABASE_URL overrides the
database, which is emptied first).

    .venv/bin/python bench/webhooks.py [--events 1500] [--endpoints 8] [--receiver lean|tests]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import timeit
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "shared"))
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402

from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head  # noqa: E402
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork  # noqa: E402
from mailroom.adapters.webhook_queue import WebhookQueue  # noqa: E402
from mailroom.adapters.webhook_sender import Urllib3WebhookSender  # noqa: E402
from mailroom.domain.model import Client  # noqa: E402
from mailroom.domain.outbound_webhooks import (  # noqa: E402
    OutboxEvent,
    encode_body,
    event_body,
    new_secret,
    secret_key,
    signed_headers,
)
from mailroom.domain.sealed_secrets import SecretKeyring  # noqa: E402
from mailroom.domain.tenancy import SYSTEM_ACTOR  # noqa: E402
from mailroom.services import outbound_webhooks as webhooks  # noqa: E402

DATABASE_URL = os.environ.get(
    "MAILROOM_BENCH_DATABASE_URL",
    "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom_bench_webhooks",
)
BATCH = 250


class ListQueue(WebhookQueue):
    def __init__(self) -> None:
        self.sent: list[int] = []

    def send(self, delivery_ids: Sequence[int], *, delay_seconds: int = 0) -> None:
        self.sent.extend(delivery_ids)


def signing_microseconds() -> tuple[float, float]:
    """(headers alone, body encoding + headers) per delivery, in µs."""
    event = OutboxEvent(
        id=123456,
        client_id=uuid.uuid4(),
        type="bounced",
        at=datetime.now(UTC),
        detail={"recipient": "ada@example.com", "bounce_type": "hard", "diagnostic": "550 5.1.1"},
        message_id=uuid.uuid4(),
        metadata={"order": "42", "tags": ["welcome"]},
        recipients=["ada@example.com"],
    )
    key = secret_key(new_secret())
    body = encode_body(event_body(event))
    n = 20_000
    sign = timeit.timeit(lambda: signed_headers([key], "evt_123456", 1_800_000_000, body), number=n)
    full = timeit.timeit(
        lambda: signed_headers([key], "evt_123456", 1_800_000_000, encode_body(event_body(event))),
        number=n,
    )
    return sign / n * 1e6, full / n * 1e6


def fresh_database() -> Database:
    ensure_database_exists(DATABASE_URL)
    engine = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade_to_head(DATABASE_URL)
    return Database(DATABASE_URL, pool_size=40, max_overflow=10)


def start_receiver(*, lean: bool) -> tuple[subprocess.Popen[bytes], int]:
    """The receiver in its own process: the tests' (http.server) or the lean asyncio one."""
    script = Path(__file__).resolve()
    command = [str(script.parent / "_lean_receiver.py")] if lean else [str(script), "--serve"]
    process = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'shared'}:{REPO}"},
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, port


def serve() -> None:
    from tests.webhook_receiver import Behaviour, Receiver

    receiver = Receiver(keep_bodies=False)
    receiver.behaviour["/slow"] = Behaviour(delay_seconds=5)
    with receiver:
        print(receiver.port, flush=True)
        while True:
            time.sleep(3600)


def run(
    database: Database, port: int, *, events: int, endpoints: int, slow: bool
) -> tuple[float, float]:
    """(deliveries per second to the fast endpoints, dispatcher CPU µs per delivery)."""
    keyring = SecretKeyring.from_setting(SecretKeyring.generate_setting())
    with database.engine.begin() as connection:
        connection.execute(
            text("TRUNCATE message_events, messages, message_recipients, clients CASCADE")
        )
    client = Client(uuid.uuid4(), "bench", f"mr_live_{uuid.uuid4().hex[:24]}", 10**6, 10**9)
    with SqlUnitOfWork(database) as uow:
        uow.clients.add(client)
        uow.commit()
    paths = [f"/fast{n}" for n in range(endpoints)] + (["/slow"] if slow else [])
    fast_ids = []
    for path in paths:
        created = webhooks.create_endpoint(
            SqlUnitOfWork(database),
            keyring,
            client.id,
            url=f"http://127.0.0.1:{port}{path}",
            events=None,
            description=None,
            allow_private=True,
            actor=SYSTEM_ACTOR,
        )
        if path != "/slow":
            fast_ids.append(created.endpoint.id)
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO messages (id, client_id, trace_id, template_name, from_address, "
                "recipient, to_addresses, metadata) SELECT gen_random_uuid(), :c, 't', 'welcome', "
                "'noreply@example.com', 'ada@example.com', '[\"ada@example.com\"]', "
                '\'{"order": "42"}\' FROM generate_series(1, :n)'
            ),
            {"c": client.id, "n": events},
        )
        connection.execute(
            text(
                "INSERT INTO message_events (message_id, type, detail) "
                "SELECT id, 'delivered', '{\"recipient\": \"ada@example.com\"}' FROM messages"
            )
        )
    queue = ListQueue()
    while webhooks.relay(SqlUnitOfWork(database), queue, batch_size=5000).numbered:
        pass
    dispatcher = webhooks.Dispatcher(
        uow=lambda: SqlUnitOfWork(database),
        sender=Urllib3WebhookSender(allow_private=True),
        queue=queue,
        keyring=keyring,
        allow_private=True,
    )
    fast_total = events * endpoints
    started = time.perf_counter()
    cpu_started = time.process_time()
    while True:
        pending, queue.sent = queue.sent, []
        for start in range(0, len(pending), BATCH):
            dispatcher.dispatch(pending[start : start + BATCH])
        with database.engine.connect() as connection:
            done = connection.execute(
                text(
                    "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded' "
                    "AND endpoint_id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": "{" + ",".join(map(str, fast_ids)) + "}"},
            ).scalar_one()
        if done >= fast_total:
            break
        if not queue.sent:
            time.sleep(0.05)
            # Deferred deliveries come back when due, as SQS's delay would.
            webhooks.relay(SqlUnitOfWork(database), queue, batch_size=5000)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return fast_total / elapsed, cpu / fast_total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--events", type=int, default=1500)
    parser.add_argument("--endpoints", type=int, default=8)
    parser.add_argument(
        "--receiver",
        choices=("lean", "tests"),
        default="lean",
        help="lean: asyncio, tens of µs a request; tests: tests/webhook_receiver.py (http.server)",
    )
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    sign_us, full_us = signing_microseconds()
    print(f"signing (3 headers, 1 secret)        {sign_us:8.1f} µs/delivery")
    print(f"body encoding + signing              {full_us:8.1f} µs/delivery")
    database = fresh_database()
    process, port = start_receiver(lean=args.receiver == "lean")
    try:
        alone, cpu = run(database, port, events=args.events, endpoints=args.endpoints, slow=False)
        print(f"fast endpoints only                  {alone:8.0f} webhooks/s")
        print(f"  dispatcher CPU (this process)      {cpu:8.0f} µs/delivery")
        beside, cpu = run(database, port, events=args.events, endpoints=args.endpoints, slow=True)
        print(f"fast endpoints beside a 5 s endpoint {beside:8.0f} webhooks/s")
        print(f"  dispatcher CPU (this process)      {cpu:8.0f} µs/delivery")
        print(f"change                               {100 * (beside - alone) / alone:+8.1f} %")
    finally:
        process.kill()
    # The slow endpoint's lanes are still sending in the background; they are
    # not waited for.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
