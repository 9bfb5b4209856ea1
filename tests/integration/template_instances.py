"""Mailroom instances in separate processes, for the single-flight compile tests.

Each process is what a Lambda container is: its own renderer (own LRU), the
same Redis. Functions here run in children started with the ``spawn`` method,
so they take only picklable arguments.
"""

from __future__ import annotations

import multiprocessing.synchronize
import threading
import time
from dataclasses import asdict
from queue import Queue
from typing import Any

from mailroom.adapters.compiled_templates import TemplateCompiler
from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.redis_template_code import RedisTemplateCode
from mailroom.adapters.templates import TemplateRenderer, process_watchdog
from mailroom.domain.templates import TemplateSource

COMPILE_TIMEOUT_SECONDS = 1.0
# Every instance of a deployment shares one key, as TEMPLATE_CODE_SIGNING_KEY.
SIGNING_KEY = b"integration-test-template-code-signing-key"


class SlowCompiler(TemplateCompiler):
    """A real compiler that first waits, so every contender arrives mid-compile."""

    def __init__(self, delay_seconds: float, started: Any = None) -> None:
        super().__init__(
            process_watchdog(), timeout_seconds=COMPILE_TIMEOUT_SECONDS, budget_bytes=8 << 20
        )
        self.delay_seconds = delay_seconds
        self.started = started

    def compile(self, source: TemplateSource) -> bytes:
        if self.started is not None:
            self.started.set()
        time.sleep(self.delay_seconds)  # outside the compile deadline, like a slow CPU
        return super().compile(source)


def instance(redis_url: str, compiler: TemplateCompiler) -> TemplateRenderer:
    return TemplateRenderer(
        shared=RedisTemplateCode(RedisStore(redis_url)), signing_key=SIGNING_KEY, compiler=compiler
    )


def render_once(
    renderer: TemplateRenderer, source: TemplateSource, props: dict[str, Any]
) -> dict[str, Any]:
    started = time.monotonic()
    rendered = renderer.render(source, props)
    return {
        "html": rendered.html,
        "subject": rendered.subject,
        "seconds": time.monotonic() - started,
    }


def contender(
    redis_url: str,
    source: dict[str, Any],
    props: dict[str, Any],
    start: multiprocessing.synchronize.Barrier,
    results: Any,
    delay_seconds: float,
) -> None:
    """One cold instance: wait for the others, render, report (and its compile count)."""
    renderer = instance(redis_url, SlowCompiler(delay_seconds))
    template = TemplateSource(**source)
    # Pay for imports and first-use setup before the race, on a private instance.
    TemplateRenderer().render(TemplateSource(name="warmup", subject="", html="x"), {})
    start.wait()
    outcome = render_once(renderer, template, props)
    results.put({**outcome, "compiles": renderer.store.metrics.compiles, "kind": "process"})


def stalled_holder(
    redis_url: str, source: dict[str, Any], compiling: multiprocessing.synchronize.Event
) -> None:
    """Takes the compile lock, says so, and never finishes: the test kills it."""
    renderer = instance(redis_url, SlowCompiler(3600, started=compiling))
    renderer.render(TemplateSource(**source), {})


def thread_contenders(
    count: int,
    redis_url: str,
    source: TemplateSource,
    props: dict[str, Any],
    start: multiprocessing.synchronize.Barrier,
    delay_seconds: float,
) -> tuple[TemplateRenderer, list[threading.Thread], Queue[dict[str, Any]]]:
    """``count`` threads sharing one instance, as the local runner's handlers do."""
    renderer = instance(redis_url, SlowCompiler(delay_seconds))
    results: Queue[dict[str, Any]] = Queue()

    def run() -> None:
        start.wait()
        results.put({**render_once(renderer, source, props), "kind": "thread"})

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    return renderer, threads, results


def fields(source: TemplateSource) -> dict[str, Any]:
    return asdict(source)
