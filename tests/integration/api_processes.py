"""Separate OS processes sending through the real send handler, as separate Lambda instances do.

Each process builds its own services (its own credential cache, its own
connection pools) against the test PostgreSQL and Redis, waits at a barrier
so they all start together, and reports the status of every request.
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from mailroom.bootstrap import bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.client_gate import ClientGate
from tests.events import FakeLambdaContext, load_event, with_headers
from tests.fakes import RecordingQueue, ScriptedProvider

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class Burst:
    database_url: str
    redis_url: str
    api_key: str
    api_secret: str
    requests: int


def _send_burst(burst: Burst, barrier: Barrier, results: Any) -> None:
    settings = Settings(
        database_url=burst.database_url, redis_url=burst.redis_url, templates_dir=TEMPLATES
    )
    services = bootstrap(settings, queue=RecordingQueue(), providers={"smtp": ScriptedProvider()})
    api = create_api(
        [send_routes(lambda: services)],
        max_request_bytes=lambda: settings.max_request_bytes,
        client_gate=ClientGate(lambda: services),
    )
    event = load_event("send/send-welcome")
    with_headers(event, X_Api_Key=burst.api_key, X_Api_Secret=burst.api_secret)
    barrier.wait(timeout=60)
    statuses = []
    for _ in range(burst.requests):
        response = api.resolve(json.loads(json.dumps(event)), FakeLambdaContext())
        statuses.append(
            (response["statusCode"], json.loads(response["body"]).get("error", {}).get("code"))
        )
    results.put(statuses)


def send_in_processes(burst: Burst, processes: int) -> list[tuple[int, str | None]]:
    """Every (status, error code) the processes got, in no particular order."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_send_burst, args=(burst, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        collected: list[tuple[int, str | None]] = []
        for _ in workers:
            collected += [(int(s), c) for s, c in results.get(timeout=120)]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert all(worker.exitcode == 0 for worker in workers), [w.exitcode for w in workers]
    return collected


@dataclass(frozen=True)
class Caller:
    """What a long-lived API process sends with: headers for GET /v1/messages."""

    database_url: str
    redis_url: str
    headers: dict[str, str]


def _serve_until_told(caller: Caller, warm: Any, go: Any, results: Any) -> None:
    settings = Settings(
        database_url=caller.database_url, redis_url=caller.redis_url, templates_dir=TEMPLATES
    )
    services = bootstrap(settings, queue=RecordingQueue(), providers={"smtp": ScriptedProvider()})
    api = create_api(
        [status_routes(lambda: services)],
        max_request_bytes=lambda: settings.max_request_bytes,
        client_gate=ClientGate(lambda: services),
    )

    def request() -> tuple[int, str | None]:
        event = load_event("status/health")
        event["path"] = event["resource"] = "/v1/messages"
        with_headers(event, **{name.replace("-", "_"): v for name, v in caller.headers.items()})
        response = api.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"]).get("error", {}).get("code")

    first = request()
    results.put(("warm", first, len(services.authenticator.cache)))
    warm.set()
    go.wait(timeout=120)
    results.put(("after", request(), len(services.authenticator.cache)))


class WarmProcess:
    """An API process that serves one request, then waits; ``next_request`` sends another.

    It stands for another Lambda instance whose credential cache is warm when
    a change is made elsewhere.
    """

    def __init__(self, caller: Caller) -> None:
        context = multiprocessing.get_context("spawn")
        self._warm, self._go = context.Event(), context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=_serve_until_told, args=(caller, self._warm, self._go, self._results)
        )

    def __enter__(self) -> WarmProcess:
        self._process.start()
        return self

    def first_answer(self) -> tuple[tuple[int, str | None], int]:
        """(status, code) of the warming request, and how many entries its cache holds."""
        _, answer, cached = self._results.get(timeout=120)
        assert self._warm.wait(timeout=120)
        return answer, cached

    def next_request(self) -> tuple[int, str | None]:
        self._go.set()
        _, answer, _ = self._results.get(timeout=120)
        return answer  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        self._go.set()
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
