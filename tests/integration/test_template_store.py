"""The compiled-template store on real Redis and PostgreSQL: single-flight
compiles across threads and processes, a killed lock holder, and changes
picked up at once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
import redis

from mailroom.adapters.compiled_templates import template_key
from mailroom.adapters.db.template_versions import SqlTemplateStore
from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.redis_template_code import RedisTemplateCode
from mailroom.adapters.templates import FileTemplateStore, LayeredTemplateStore, TemplateRenderer
from mailroom.domain.templates import TemplateSource
from mailroom.services import templates as template_service
from tests.integration import template_instances as instances

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SPAWN = multiprocessing.get_context("spawn")
CONTENDERS = 16
COMPILE_DELAY = 0.3  # long enough for all 16 to arrive while the first compiles
# The lock of a dead holder expires after compile timeout + 1 s; a successor
# then compiles. The bound allows that plus start-up noise, not a hang.
TAKEOVER_BOUND = instances.COMPILE_TIMEOUT_SECONDS + 1.0 + 5.0


def _receipt(unique: str) -> tuple[TemplateSource, dict[str, Any]]:
    """The receipt, made new (a never-seen content hash) for each test."""
    shipped = FileTemplateStore(TEMPLATES).get("receipt")
    source = TemplateSource(
        name=f"receipt-{unique}",
        subject=shipped.subject,
        html=shipped.html.replace("</body>", f"<!-- {unique} --></body>"),
        text=shipped.text,
    )
    return source, shipped.sample_props or {}


def _processes(
    count: int,
    redis_url: str,
    source: TemplateSource,
    props: dict[str, Any],
    start: Any,
    results: Any,
) -> list[Any]:
    started = [
        SPAWN.Process(
            target=instances.contender,
            args=(redis_url, instances.fields(source), props, start, results, COMPILE_DELAY),
        )
        for _ in range(count)
    ]
    for process in started:
        process.start()
    return started


def _collect(results: Any, count: int, timeout: float) -> list[dict[str, Any]]:
    collected: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(collected) < count:
        try:
            collected.append(results.get(timeout=max(deadline - time.monotonic(), 0.01)))
        except Empty:
            break
    return collected


def test_sixteen_cold_instances_compile_a_new_template_once(redis_url: str) -> None:
    # GIVEN 8 threads sharing one instance and 8 processes, all cold, released at once
    source, props = _receipt(uuid.uuid4().hex)
    start = SPAWN.Barrier(CONTENDERS)
    results = SPAWN.Queue()
    processes = _processes(8, redis_url, source, props, start, results)
    local, threads, thread_results = instances.thread_contenders(
        8, redis_url, source, props, start, COMPILE_DELAY
    )
    # WHEN they all render the template nobody has compiled yet
    for thread in threads:
        thread.join(120)
    outcomes = _collect(results, 8, 120) + [thread_results.get() for _ in threads]
    for process in processes:
        process.join(30)
    # THEN exactly one of them compiled, and all 16 rendered the same, right email
    compiles = local.store.metrics.compiles + sum(o.get("compiles", 0) for o in outcomes)
    assert compiles == 1
    assert len(outcomes) == CONTENDERS
    expected = TemplateRenderer().render(source, props)
    assert {o["html"] for o in outcomes} == {expected.html}
    assert {o["subject"] for o in outcomes} == {expected.subject}
    assert "Merino crew sweater" in expected.html
    assert sorted(o["kind"] for o in outcomes) == ["process"] * 8 + ["thread"] * 8


def test_a_killed_lock_holder_does_not_stop_the_others(redis_url: str) -> None:
    # GIVEN a process that took the compile lock and hangs mid-compile
    source, props = _receipt(uuid.uuid4().hex)
    compiling = SPAWN.Event()
    holder = SPAWN.Process(
        target=instances.stalled_holder,
        args=(redis_url, instances.fields(source), compiling),
    )
    start = SPAWN.Barrier(CONTENDERS)  # 15 contenders and this test
    results = SPAWN.Queue()
    processes = _processes(8, redis_url, source, props, start, results)
    local, threads, thread_results = instances.thread_contenders(
        7, redis_url, source, props, start, 0.0
    )
    holder.start()
    assert compiling.wait(60), "the holder never started compiling"
    # WHEN the others start waiting for it and it is killed
    start.wait()
    time.sleep(0.1)
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    # THEN all 15 still render it, one of them having compiled it, within the bound
    outcomes = _collect(results, 8, 120)
    for thread in threads:
        thread.join(120)
    outcomes += [thread_results.get() for _ in threads]
    for process in processes:
        process.join(30)
    assert len(outcomes) == CONTENDERS - 1
    expected = TemplateRenderer().render(source, props).html
    assert {o["html"] for o in outcomes} == {expected}
    assert local.store.metrics.compiles + sum(o.get("compiles", 0) for o in outcomes) == 1
    assert max(o["seconds"] for o in outcomes) < TAKEOVER_BOUND


def test_a_lock_nobody_releases_is_waited_for_only_so_long(redis_url: str) -> None:
    # GIVEN a compile lock held by an instance that is alive but never finishes
    source = TemplateSource(name="stuck", subject="s", html=f"<p>{uuid.uuid4().hex}</p>")
    renderer = TemplateRenderer(
        shared=RedisTemplateCode(RedisStore(redis_url)),
        signing_key=instances.SIGNING_KEY,
        compile_timeout_seconds=0.2,
    )
    client = redis.Redis.from_url(redis_url)
    client.set(f"mailroom:template-lock:{template_key(source)}", "someone-else", px=600_000)
    # WHEN this instance needs the template
    rendered = renderer.render(source, {})
    # THEN it gave up waiting and compiled it itself
    assert source.html in rendered.html
    assert renderer.store.metrics.compiles == 1
    assert client.get(f"mailroom:template-lock:{template_key(source)}") == b"someone-else"


def test_redis_down_still_renders(redis_url: str) -> None:
    renderer = TemplateRenderer(
        shared=RedisTemplateCode(RedisStore("redis://127.0.0.1:1/0")),
        signing_key=instances.SIGNING_KEY,
    )
    source = TemplateSource(name="t", subject="s", html="<p>{{ n }}</p>")
    assert "<p>3</p>" in renderer.render(source, {"n": 3}).html


def test_an_edited_file_template_is_picked_up_by_every_instance(
    redis_url: str, tmp_path: Path
) -> None:
    # GIVEN two instances that both rendered a file template (LRU and Redis warm)
    folder = tmp_path / "note"
    folder.mkdir()
    (folder / "subject").write_text("Note")
    (folder / "html").write_text(f"<p>old {uuid.uuid4().hex} {{{{ n }}}}</p>")
    store = FileTemplateStore(tmp_path)
    first, second = (instances.instance(redis_url, instances.SlowCompiler(0)) for _ in range(2))
    for renderer in (first, second):
        assert "old" in renderer.render(store.get("note"), {"n": 1}).html
    # WHEN the file changes
    (folder / "html").write_text(f"<p>new {uuid.uuid4().hex} {{{{ n }}}}</p>")
    # THEN the very next render of each uses the new source, never the old
    for renderer in (first, second, first):
        html = renderer.render(store.get("note"), {"n": 2}).html
        assert "new" in html
        assert "old" not in html
    assert first.store.metrics.compiles + second.store.metrics.compiles == 2


def test_a_new_uploaded_version_is_picked_up_and_a_pinned_one_still_renders(
    database: Database, redis_url: str
) -> None:
    # GIVEN an uploaded template, rendered by two instances
    store = LayeredTemplateStore(FileTemplateStore(TEMPLATES), SqlTemplateStore(database))
    name = f"promo-{uuid.uuid4().hex[:8]}"
    first, second = (instances.instance(redis_url, instances.SlowCompiler(0)) for _ in range(2))
    uploaded = template_service.upload_template(
        store, first, name=name, subject="Sale", html="<p>ten percent off {{ who }}</p>"
    )
    assert uploaded.version == 1
    for renderer in (first, second):
        assert "ten percent" in renderer.render(store.get(name), {"who": "Ada"}).html
    # WHEN a new version is uploaded through one instance
    template_service.upload_template(
        store, first, name=name, subject="Sale", html="<p>twenty percent off {{ who }}</p>"
    )
    # THEN both serve it on their next render; version 1 only when pinned
    for renderer in (second, first):
        html = renderer.render(store.get(name), {"who": "Ada"}).html
        assert "twenty percent" in html
        assert "ten percent" not in html
    assert "ten percent" in second.render(store.get(name, 1), {"who": "Ada"}).html


def test_concurrent_uploads_get_distinct_versions(database: Database) -> None:
    store = SqlTemplateStore(database)
    name = f"race-{uuid.uuid4().hex[:8]}"
    versions: list[int] = []

    def upload(n: int) -> None:
        versions.append(store.add_version(TemplateSource(name=name, subject="s", html=str(n))))

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]
    assert [v.version for v in store.versions() if v.name == name] == [1, 2, 3, 4, 5, 6]
    assert store.get(name).version == 6
