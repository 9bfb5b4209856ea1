"""The local runner end to end: ``python -m devstack`` as a subprocess, driven over HTTP.

The runner and its database come from harness.py.
"""

from __future__ import annotations

import email
import email.policy
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    DELIVERY_TIMEOUT_SECONDS,
    SAMPLE_PROPS,
    HttpAnswer,
    Runner,
    http,
    kill,
    start_runner,
)

pytestmark = pytest.mark.e2e


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
