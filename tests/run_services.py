"""The PostgreSQL databases and the Redis server a test run creates for itself.

Several people (and CI jobs) run the suite at once against the same PostgreSQL
and Redis, so by default a run touches nothing it did not create: its databases
are named after the run (``mailroom_<role>_<pid>_<random>``) and dropped when the
run ends, and Redis is a ``redis-server`` the run starts on a free loopback port
(with no persistence) and stops at the end. Redis databases cannot be created or
owned, and Mailroom's keys (breakers, idempotency, compiled templates, rate
limits) have no common prefix to scope by, so a private server is the one way a
run cannot disturb another's keys.

Setting MAILROOM_TEST_DATABASE_URL / MAILROOM_TEST_REDIS_URL (integration) or
MAILROOM_E2E_DATABASE / MAILROOM_E2E_REDIS_URL (e2e) uses what they name instead;
the tests then empty those (README.md, "Running the tests").
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_SERVER = "postgresql+pg8000://postgres@127.0.0.1:5432"
# The pid tells whose a leftover is (after a kill -9); the random part keeps two
# machines sharing one PostgreSQL, or a recycled pid, apart.
RUN_ID = f"{os.getpid()}_{secrets.token_hex(4)}"
REDIS_START_TIMEOUT_SECONDS = 10


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_database_name(role: str) -> str:
    """The name of this run's own database for ``role`` (e.g. ``test``, ``e2e``)."""
    return f"mailroom_{role}_{RUN_ID}"


def drop_database_at_exit(url: str) -> None:
    """Drop the database ``url`` names when the run ends, whatever still holds connections."""
    _clean_up_on_sigterm()
    atexit.register(drop_database, url)


@functools.cache
def _clean_up_on_sigterm() -> None:
    # Python's default SIGTERM ends the process without running atexit; as
    # Ctrl-C does, it now unwinds, so a run stopped by `kill` or a CI timeout
    # still drops its databases and stops its Redis server.
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def drop_database(url: str) -> None:
    name = make_url(url).database
    server = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        server.dispose()


def _die_with_parent() -> None:
    # Linux's PR_SET_PDEATHSIG: a run killed with SIGKILL leaves no server behind.
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@functools.cache
def own_redis_server() -> str:
    """``redis://127.0.0.1:PORT`` of a redis-server this run started; stopped at exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "the tests start a private redis-server and none is on PATH: install Redis, "
            "or set MAILROOM_TEST_REDIS_URL and MAILROOM_E2E_REDIS_URL to Redis databases "
            "the tests may empty (README.md, 'Running the tests')"
        )
    directory = tempfile.mkdtemp(prefix="mailroom-test-redis-")
    port = free_port()
    process = subprocess.Popen(
        [
            *(binary, "--bind", "127.0.0.1", "--port", str(port)),
            *("--save", "", "--appendonly", "no"),
            *("--dir", directory, "--logfile", os.path.join(directory, "redis.log")),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    _clean_up_on_sigterm()
    atexit.register(_stop_redis, process, directory)
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_SECONDS
    try:
        while True:
            try:
                client.ping()
                return url
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server on port {port} did not start; see {directory}/redis.log"
                    ) from None
                time.sleep(0.05)
    finally:
        client.close()


def _stop_redis(process: subprocess.Popen[bytes], directory: str) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    if process.poll() is None:
        process.kill()
        process.wait()
    shutil.rmtree(directory, ignore_errors=True)
