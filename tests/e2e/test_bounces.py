"""Issue 16 through the local runner: a real DSN to the inbound listener, one-click over HTTP."""

from __future__ import annotations

import smtplib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import DELIVERY_TIMEOUT_SECONDS, SAMPLE_PROPS, Runner, http
from tests.e2e.test_local_runner import delivered_email

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"


def _send(runner: Runner, to: str, **extra: Any) -> str:
    answer = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers=runner.auth_headers(),
        body={"template": "welcome", "to": to, "props": SAMPLE_PROPS, **extra},
    )
    assert answer.status == 202, answer.body
    return str(answer.json()["id"])


def _status(runner: Runner, message_id: str, wanted: str) -> dict[str, Any]:
    url = f"{runner.api_url}/v1/messages/{message_id}"

    def reached() -> dict[str, Any] | None:
        view: dict[str, Any] = http("GET", url, headers=runner.auth_headers()).json()
        return view if view["status"] == wanted else None

    return runner.wait_for(f"status {wanted!r}", reached, DELIVERY_TIMEOUT_SECONDS)


def test_a_real_dsn_to_the_inbound_listener_bounces_the_message(runner: Runner) -> None:
    # GIVEN a message the worker delivered with its VERP return path
    message_id = _send(runner, "bounce-e2e@example.com")
    delivered = delivered_email(runner, message_id)
    return_path = str(delivered["Return-Path"]).strip("<>")
    assert return_path.startswith(f"b+{message_id.replace('-', '')}.")
    # WHEN Postfix's DSN (a real sample) is delivered to that address over SMTP
    host, _, port = runner.credentials["inbound_smtp"].rpartition(":")
    with smtplib.SMTP(host, int(port), timeout=10) as smtp:
        # On the wire lines end in CRLF (smtplib leaves bytes as they are).
        raw = (FIXTURES / "flufl-dsn_10.eml").read_bytes().replace(b"\n", b"\r\n")
        smtp.sendmail("", [return_path], raw)
    # THEN the message bounced and the address is suppressed
    view = _status(runner, message_id, "bounced")
    assert any(event["type"] == "bounced" for event in view["events"])
    recipients = {r["address"]: r["status"] for r in view["recipients"]}
    assert recipients["bounce-e2e@example.com"] == "bounced"


def test_one_click_unsubscribe_over_http(runner: Runner) -> None:
    message_id = _send(runner, "unsub-e2e@example.com", bulk=True)
    delivered = delivered_email(runner, message_id)
    url = str(delivered["List-Unsubscribe"]).split(",")[0].strip().strip("<>")
    assert delivered["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    page = http("GET", url)
    assert page.status == 200
    assert b"<form" in page.body
    request = urllib.request.Request(
        url,
        data=b"List-Unsubscribe=One-Click",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.read() == b""
        assert response.headers.get("Set-Cookie") is None
    view = http(
        "GET", f"{runner.api_url}/v1/messages/{message_id}", headers=runner.auth_headers()
    ).json()
    assert "unsubscribed" in [event["type"] for event in view["events"]]
    forged = url[:-1] + ("a" if url[-1] != "a" else "b")
    assert http("POST", forged).status == 404
