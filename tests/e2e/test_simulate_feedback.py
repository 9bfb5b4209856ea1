"""`mailroomctl simulate`: each provider's signed event reaches the message (issue 22).

The runner verifies webhooks with keys it generated (.local/webhook-keys);
simulate signs with the same keys, as SendGrid, Mailgun and SNS would.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from mailroomctl.local_webhooks import LocalWebhookKeys
from tests.e2e.harness import Runner, http, mailroomctl
from tests.events import REPO_ROOT

pytestmark = pytest.mark.e2e


def _sent_message(runner: Runner) -> str:
    answer = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers=runner.auth_headers(),
        # A recipient of its own: a simulated bounce or complaint suppresses it.
        body={"template": "welcome", "to": f"{uuid.uuid4().hex}@example.com", "props": _props()},
    )
    assert answer.status == 202, answer.body
    message_id = str(answer.json()["id"])
    runner.wait_for(
        "the message sent",
        lambda: True if _message(runner, message_id)["status"] == "sent" else None,
        timeout=60,
    )
    return message_id


def _props() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (REPO_ROOT / "templates" / "welcome" / "sample.json").read_text()
    )
    return loaded


def _message(runner: Runner, message_id: str) -> dict[str, Any]:
    answer = http(
        "GET", f"{runner.api_url}/v1/messages/{message_id}", headers=runner.auth_headers()
    )
    assert answer.status == 200, answer.body
    found: dict[str, Any] = answer.json()
    return found


def _simulate(runner: Runner, *args: str) -> Any:
    done = mailroomctl(
        runner,
        "--credentials",
        str(runner.local_dir / "dev-credentials.json"),
        "simulate",
        *args,
        "--keys",
        str(runner.local_dir / "webhook-keys"),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("provider", "kinds", "history"),
    [
        ("ses", ["delivery", "open", "click"], ["delivered", "opened", "clicked"]),
        ("sendgrid", ["delivery", "bounce"], ["delivered", "bounced"]),
        ("mailgun", ["delivery", "complaint"], ["delivered", "complained"]),
    ],
)
def test_simulated_events_are_signed_verified_and_recorded(
    runner: Runner, provider: str, kinds: list[str], history: list[str]
) -> None:
    # GIVEN a message the local stack sent
    message_id = _sent_message(runner)
    # WHEN the provider's events for it are simulated
    for kind in kinds:
        answer = _simulate(runner, kind, message_id, "--provider", provider)
        # THEN the webhook accepted each one (its signature verified)
        assert answer["posted"] == f"/webhooks/{provider}"
    # ...and the message's history shows them, in order
    events = [event["type"] for event in _message(runner, message_id)["events"]]
    recorded = [event for event in events if event in history]
    assert recorded == history, events


def test_an_event_signed_with_other_keys_is_refused(runner: Runner, tmp_path: Path) -> None:
    # GIVEN keys the runner never saw
    message_id = _sent_message(runner)
    LocalWebhookKeys.generate().write(tmp_path / "strangers-keys")
    done = mailroomctl(
        runner,
        "--credentials",
        str(runner.local_dir / "dev-credentials.json"),
        "simulate",
        "bounce",
        message_id,
        "--provider",
        "sendgrid",
        "--keys",
        str(tmp_path / "strangers-keys"),
    )
    # WHEN simulate signs with them THEN the webhook refuses the signature
    assert done.returncode == 1
    assert "401" in done.stderr
