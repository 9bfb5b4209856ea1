"""The local runner as a test harness: one ``python -m devstack`` subprocess per run.

Needs PostgreSQL and Redis on 127.0.0.1 (see SERVICES.md); everything else (moto,
the SMTP sink) the runner starts itself. The harness owns a database named
after the run and a Redis server of the run's own (tests/run_services.py), or,
when told, the database ``MAILROOM_E2E_DATABASE`` (dropped first, so every run
starts from nothing) and the Redis database ``MAILROOM_E2E_REDIS_URL``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.run_services import (
    POSTGRES_SERVER,
    drop_database,
    drop_database_at_exit,
    free_port,
    own_redis_server,
    run_database_name,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PROPS: dict[str, Any] = json.loads(
    (REPO_ROOT / "templates" / "welcome" / "sample.json").read_text(encoding="utf-8")
)
TOLD_DATABASE = os.environ.get("MAILROOM_E2E_DATABASE")
E2E_DATABASE = TOLD_DATABASE or run_database_name("e2e")


def e2e_redis_url() -> str:
    # Read when a runner starts, not at import: bench/http_runner.py sets it after importing.
    told = os.environ.get("MAILROOM_E2E_REDIS_URL")
    # Database 1 of the run's own server: the integration tests flush database 0.
    return told or f"{own_redis_server()}/1"


STARTUP_TIMEOUT_SECONDS = 60
DELIVERY_TIMEOUT_SECONDS = 30
SHUTDOWN_TIMEOUT_SECONDS = 30
HTTP_TIMEOUT_SECONDS = 10

T = TypeVar("T")


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None
) -> HttpAnswer:
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return HttpAnswer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return HttpAnswer(error.code, dict(error.headers), error.read())


@dataclass
class Runner:
    """One ``python -m devstack`` subprocess and what the test knows about it."""

    process: subprocess.Popen[bytes]
    api_url: str
    local_dir: Path
    log_path: Path

    @property
    def outbox(self) -> Path:
        return self.local_dir / "outbox"

    @property
    def credentials(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(
            (self.local_dir / "dev-credentials.json").read_text(encoding="utf-8")
        )
        return data

    def auth_headers(self, *, secret: str | None = None) -> dict[str, str]:
        credentials = self.credentials
        return {
            "X-Api-Key": credentials["api_key"],
            "X-Api-Secret": secret if secret is not None else credentials["api_secret"],
        }

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def fail(self, reason: str) -> None:
        pytest.fail(f"{reason}\n--- runner output ---\n{self.output()[-20000:]}")

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float) -> T:
        """Poll ``check`` until it returns something; fail with the runner's output if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.fail(f"the runner exited with {self.process.returncode} waiting for {what}")
            result = check()
            if result is not None:
                return result
            time.sleep(0.2)
        self.fail(f"no {what} within {timeout} s")
        raise AssertionError("unreachable")

    def stop(self) -> int:
        """SIGINT, as Ctrl-C sends; the exit code, or a failure if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.fail(f"the runner did not exit within {SHUTDOWN_TIMEOUT_SECONDS} s of SIGINT")
            raise


def start_runner(
    local_dir: Path,
    database_url: str,
    log_path: Path,
    *,
    redis_url: str | None = None,
    environment_overrides: dict[str, str] | None = None,
) -> Runner:
    """A runner of its own; ``environment_overrides`` win over everything the harness sets."""
    api_port = free_port()
    environment = {
        **os.environ,
        "MAILROOM_API_PORT": str(api_port),
        "MAILROOM_SMTP_PORT": str(free_port()),
        "MAILROOM_INBOUND_SMTP_PORT": str(free_port()),
        "MAILROOM_LOCAL_DIR": str(local_dir),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url or e2e_redis_url(),
        "PYTHONUNBUFFERED": "1",
        **(environment_overrides or {}),
    }
    # The runner must start its own moto, never reach a configured endpoint.
    environment.pop("AWS_ENDPOINT_URL", None)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is for pytest only
        )
    runner = Runner(process, f"http://127.0.0.1:{api_port}", local_dir, log_path)

    def healthy() -> bool | None:
        if not (local_dir / "dev-credentials.json").is_file():
            return None
        try:
            return True if http("GET", f"{runner.api_url}/health").status == 200 else None
        except OSError:
            return None

    try:
        runner.wait_for("healthy API", healthy, STARTUP_TIMEOUT_SECONDS)
    except BaseException:
        kill(runner)
        raise
    return runner


def kill(runner: Runner) -> None:
    if runner.process.poll() is None:
        runner.process.kill()
        runner.process.wait()


@pytest.fixture(scope="session")
def database_url() -> str:
    """A database of its own, dropped first so no earlier run leaves anything behind."""
    url = f"{POSTGRES_SERVER}/{E2E_DATABASE}"
    drop_database(url)
    if TOLD_DATABASE is None:
        drop_database_at_exit(url)
    # The runner creates and migrates it, as it does on a developer's first start.
    return url


@pytest.fixture(scope="session")
def runner(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Runner]:
    folder = tmp_path_factory.mktemp("runner")
    started = start_runner(folder / "local", database_url, folder / "runner.log")
    try:
        yield started
    finally:
        try:
            started.stop()
        finally:
            kill(started)


def mailroomctl(
    runner: Runner, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the operators' CLI against the runner, with its admin token unless given one."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mailroomctl",
            "--api-url",
            runner.api_url,
            # One argument: a token_urlsafe token starting with "-" (1 in 64)
            # would otherwise be read by argparse as an option.
            "--admin-token=" + (token if token is not None else runner.credentials["admin_token"]),
            *args,
        ],
        cwd=REPO_ROOT,
        # This checkout's packages, whatever the venv's editable install points at.
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'shared'}{os.pathsep}{REPO_ROOT}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def mailroomctl_json(runner: Runner, *args: str) -> Any:
    """mailroomctl's decoded JSON output; fails the test on a non-zero exit."""
    done = mailroomctl(runner, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
