"""The local runner end to end: ``python -m devstack`` as a subprocess, driven over HTTP.

Needs PostgreSQL and Redis on 127.0.0.1 (see SERVICES.md); everything else (moto,
the SMTP sink) the runner starts itself. The test owns the database
``mailroom_e2e`` and drops it first, so every run starts from nothing.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PROPS: dict[str, Any] = json.loads(
    (REPO_ROOT / "templates" / "welcome" / "sample.json").read_text(encoding="utf-8")
)
E2E_DATABASE = "mailroom_e2e"
POSTGRES_SERVER = "postgresql+pg8000://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"

STARTUP_TIMEOUT_SECONDS = 60
DELIVERY_TIMEOUT_SECONDS = 30
SHUTDOWN_TIMEOUT_SECONDS = 30
HTTP_TIMEOUT_SECONDS = 10

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def start_runner(local_dir: Path, database_url: str, log_path: Path) -> Runner:
    api_port = free_port()
    environment = {
        **os.environ,
        "MAILROOM_API_PORT": str(api_port),
        "MAILROOM_SMTP_PORT": str(free_port()),
        "MAILROOM_LOCAL_DIR": str(local_dir),
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "PYTHONUNBUFFERED": "1",
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


@pytest.fixture(scope="module")
def database_url() -> str:
    """A database of its own, dropped first so no earlier run leaves anything behind."""
    server = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{E2E_DATABASE}" WITH (FORCE)'))
    finally:
        server.dispose()
    # The runner creates and migrates it, as it does on a developer's first start.
    return f"{POSTGRES_SERVER}/{E2E_DATABASE}"


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def accepted(runner: Runner) -> HttpAnswer:
    """The welcome template with its sample props, sent once for the tests below."""
    return http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers=runner.auth_headers(),
        body={"template": "welcome", "to": "ada@example.com", "props": SAMPLE_PROPS},
    )


def delivered_email(runner: Runner, message_id: str) -> EmailMessage:
    def find() -> EmailMessage | None:
        for path in sorted(runner.outbox.glob("*.eml")):
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            if message_id in str(parsed.get("Message-ID", "")):
                return parsed
        return None

    return runner.wait_for(f".eml for {message_id}", find, DELIVERY_TIMEOUT_SECONDS)


def test_send_accepts_the_welcome_template(accepted: HttpAnswer) -> None:
    # GIVEN the runner and its demo client
    # WHEN the welcome template is sent with its sample props (the fixture)
    # THEN it is accepted for sending
    assert accepted.status == 202, accepted.body
    body = accepted.json()
    assert uuid.UUID(body["id"])
    assert body["status"] == "queued"


def test_the_worker_delivers_it_to_the_smtp_sink(runner: Runner, accepted: HttpAnswer) -> None:
    # GIVEN an accepted message
    message_id = accepted.json()["id"]

    # WHEN the worker has taken it off the queue
    message = delivered_email(runner, message_id)

    # THEN the sink holds a complete, rendered email
    assert message["From"]
    assert "ada@example.com" in message["To"]
    assert message["Subject"] == "Welcome to Mailroom, Ada!"
    assert message["Date"].datetime is not None
    assert message["Message-ID"]
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]

    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None
    assert html_part is not None
    plain = text_part.get_content()
    html = html_part.get_content()
    assert 'style="' in html  # the CSS was inlined
    for step in SAMPLE_PROPS["steps"]:
        assert step in html
        assert step in plain


def test_the_status_api_reports_it_sent(runner: Runner, accepted: HttpAnswer) -> None:
    # GIVEN an accepted message
    message_id = accepted.json()["id"]
    url = f"{runner.api_url}/v1/messages/{message_id}"

    # WHEN its status is asked for until it settles
    def sent() -> dict[str, Any] | None:
        answer = http("GET", url, headers=runner.auth_headers())
        assert answer.status == 200, answer.body
        view: dict[str, Any] = answer.json()
        return view if view["status"] == "sent" else None

    view = runner.wait_for("status 'sent'", sent, DELIVERY_TIMEOUT_SECONDS)

    # THEN it was sent once, by SMTP, and its history says so
    assert view["id"] == message_id
    assert view["provider"] == "smtp"
    assert view["attempts"] == 1
    assert view["subject"] == "Welcome to Mailroom, Ada!"
    event_types = [event["type"] for event in view["events"]]
    assert "accepted" in event_types
    assert "sent" in event_types


def test_a_wrong_secret_is_refused(runner: Runner, accepted: HttpAnswer) -> None:
    # GIVEN an existing message and the demo client's key
    message_id = accepted.json()["id"]

    # WHEN its status is asked for with the wrong secret
    answer = http(
        "GET",
        f"{runner.api_url}/v1/messages/{message_id}",
        headers=runner.auth_headers(secret="not-the-secret"),
    )

    # THEN the API refuses with 401 and the error shape
    assert answer.status == 401
    assert answer.json()["error"]["code"] == "unauthorized"


def test_an_unknown_route_answers_404(runner: Runner) -> None:
    # GIVEN the runner
    # WHEN a path no function serves is requested
    answer = http("GET", f"{runner.api_url}/v1/nothing-here")

    # THEN the gateway answers 404 in the API's error shape
    assert answer.status == 404
    error = answer.json()["error"]
    assert error["code"] == "route_not_found"
    assert error["details"] == []


def test_sigint_stops_the_runner_and_a_restart_reuses_the_credentials(
    tmp_path: Path, database_url: str
) -> None:
    # GIVEN a runner of its own
    local_dir = tmp_path / "local"
    first = start_runner(local_dir, database_url, tmp_path / "first.log")
    try:
        credentials = first.credentials

        # WHEN it gets SIGINT, as from Ctrl-C
        exit_code = first.stop()
    finally:
        kill(first)

    # THEN it exits 0, having said so
    assert exit_code == 0, first.output()
    assert "[devstack] stopped" in first.output()

    # AND a restart on the same local dir keeps the client that still works
    second = start_runner(local_dir, database_url, tmp_path / "second.log")
    try:
        assert second.credentials["api_key"] == credentials["api_key"]
        assert second.credentials["admin_token"] == credentials["admin_token"]
        assert http("GET", f"{second.api_url}/health").status == 200
        assert second.stop() == 0, second.output()
    finally:
        kill(second)
