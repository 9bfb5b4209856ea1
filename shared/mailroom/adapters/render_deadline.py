"""A hard deadline for CPU-bound code, on whichever thread runs it.

One watchdog thread per process keeps the pending deadlines. When one passes
while its code is still running, the watchdog raises an exception *in the
thread that runs it* with CPython's ``PyThreadState_SetAsyncExc``: the
interpreter delivers it at that thread's next bytecode boundary, the way it
delivers KeyboardInterrupt.

Why not SIGALRM: signal handlers run only on the main thread. Lambda calls
handlers on the main thread, but the local runner calls them on worker
threads, where ``signal.setitimer`` cannot be used at all. The async exception
works on any thread, so the same mechanism runs in both places. Like a signal,
it is delivered between bytecodes, so one long C call would delay it: the
template sandbox keeps every C call small (see ``template_sandbox.py``).

Use it only around code that holds no locks and does no I/O (a template
render): the exception may land anywhere in that code.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The guarded code ran past its deadline and was stopped."""


class _Interrupt(BaseException):
    """What the watchdog raises inside the guarded code.

    A BaseException, so template code and libraries that catch Exception
    cannot swallow it; ``deadline`` turns it into DeadlineExceeded.
    """


_ARMED, _DONE, _FIRED = 0, 1, 2
# How often an idle watchdog looks for work by itself; deadlines further away
# than this cost no wake-up when armed.
IDLE_TICK_SECONDS = 0.05


@dataclass(order=True)
class _Job:
    deadline: float
    sequence: int
    thread_id: int = field(compare=False)
    state: int = field(default=_ARMED, compare=False)


class DeadlineWatchdog:
    """Runs ``watchdog.run(seconds, function)`` with a hard deadline, on any thread."""

    def __init__(self) -> None:
        self._reset()
        self.fired = 0  # deadlines that had to interrupt something (for tests and logs)
        # A forked child inherits the lock (perhaps held) but not the thread.
        alive = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_if_alive(alive))

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: list[_Job] = []
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None
        # When the watchdog will look at the heap next, waking or not: a job
        # due after that needs no notify. Waking the watchdog on every render
        # handed it the GIL each time (issue 8: ~0.1–0.8 ms a render under load).
        self._waiting_until = 0.0

    def run(self, seconds: float, function: Callable[[], T]) -> T:
        """``function()``, or DeadlineExceeded once it has run ``seconds``."""
        armed: list[_Job] = []
        # A plain function, not a context manager: the interrupt can land on
        # any bytecode up to the disarm, and every one of them is inside this
        # try, so it always comes out as DeadlineExceeded.
        try:
            try:
                self._arm(seconds, armed)
                result = function()
            finally:
                if armed and self._disarm(armed[0]):
                    raise DeadlineExceeded(f"stopped after {seconds * 1000:.0f} ms")
        except _Interrupt:
            raise DeadlineExceeded(f"stopped after {seconds * 1000:.0f} ms") from None
        return result

    def _arm(self, seconds: float, armed: list[_Job]) -> None:
        job = _Job(time.monotonic() + seconds, next(self._sequence), threading.get_ident())
        with self._lock:
            armed.append(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="render-deadline", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._jobs, job)
            if job.deadline < self._waiting_until:
                self._waiting_until = job.deadline
                self._wake.notify()

    def _disarm(self, job: _Job) -> bool:
        """Mark the job done; True if the watchdog had already fired at it."""
        # `with` releases the lock even if the pending interrupt lands inside.
        with self._lock:
            if job.state == _FIRED:
                # Withdraw an interrupt not yet delivered, so it cannot land
                # in whatever the thread runs next.
                _set_async_exc(job.thread_id, None)
                return True
            job.state = _DONE
            return False

    def _watch(self) -> None:
        with self._lock:
            while True:
                while self._jobs and self._jobs[0].state != _ARMED:
                    heapq.heappop(self._jobs)
                now = time.monotonic()
                if not self._jobs:
                    # Idle: look again after a tick, so a job due later than
                    # that is found without being notified.
                    self._waiting_until = now + IDLE_TICK_SECONDS
                    self._wake.wait(IDLE_TICK_SECONDS)
                    continue
                delay = self._jobs[0].deadline - now
                if delay > 0:
                    self._waiting_until = self._jobs[0].deadline
                    self._wake.wait(delay)
                    continue
                job = heapq.heappop(self._jobs)
                job.state = _FIRED
                self.fired += 1
                _set_async_exc(job.thread_id, _Interrupt)


def _reset_if_alive(alive: weakref.ref[DeadlineWatchdog]) -> None:
    watchdog = alive()
    if watchdog is not None:
        watchdog._reset()


def _set_async_exc(thread_id: int, exception: type[BaseException] | None) -> None:
    # None withdraws a pending one (NULL in C).
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception) if exception else None
    )
