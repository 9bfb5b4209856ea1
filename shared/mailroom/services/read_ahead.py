"""Produce the next item of an iterator on a thread while the caller uses this one.

The planner (issue 17) reads and checks a chunk of recipients in Python and
then waits for PostgreSQL to write it; one after the other, the machine's
second core idles half the time. With the next chunk read ahead, the
database's wait (pg8000 releases the GIL while it waits on its socket) and
the next chunk's address checks overlap.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

# How long the producer waits for room before it looks at the stop flag again.
_POLL_SECONDS = 0.1

# The interpreter's GIL switch interval while a producer runs. The consumer
# spends its time waiting on a socket (PostgreSQL) and each answer must win
# the GIL back from the producer before the next request goes out: with the
# default 5 ms, each of a chunk's round trips could leave PostgreSQL idle
# for up to 5 ms. The planner, 300,000 recipients, two alternating rounds on
# the quiet machine (bench/batches.py, issue 17): 5 ms 14.5k and 17.9k
# recipients/s, 0.5 ms 19.5k and 20.4k, 0.1 ms 20.7k and 22.4k.
_SWITCH_SECONDS = 0.0001


class _SwitchInterval:
    """The shorter switch interval while any producer runs; the caller's back after the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._saved = 0.0

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self._saved, _SWITCH_SECONDS))
            self._active += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                sys.setswitchinterval(self._saved)


_switch_interval = _SwitchInterval()


class _Finished:
    """The producer's last word: the iterator ended, or raised ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


@contextmanager
def read_ahead(items: Iterator[T], depth: int = 1) -> Iterator[Iterator[T]]:
    """``items``, with up to ``depth`` produced ahead of the one being used.

    The producer's exception is raised in the caller at the item it failed
    on. Leaving the ``with`` early (the caller stopped, or raised) stops the
    producer after the item it is producing and waits for it, so nothing of
    ``items`` runs after the ``with``.
    """
    ready: queue.Queue[T | _Finished] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: T | _Finished) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Finished(error))
            return
        put(_Finished())

    def consume() -> Iterator[T]:
        while True:
            item = ready.get()
            if isinstance(item, _Finished):
                if item.error is not None:
                    raise item.error
                return
            yield item

    producer = threading.Thread(target=produce, name="read-ahead", daemon=True)
    with _switch_interval:
        producer.start()
        try:
            yield consume()
        finally:
            stop.set()
            producer.join()
