"""Outbound webhooks through the local runner: the template's tick and dispatcher run them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.harness import SAMPLE_PROPS, Runner, http, mailroomctl, mailroomctl_json
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


def test_a_sent_message_reaches_a_local_receiver_signed(runner: Runner) -> None:
    with Receiver() as receiver:
        # GIVEN an endpoint of the demo client on a plain-http local receiver
        # (make dev allows it), made by an operator with mailroomctl
        client = runner.credentials["api_key"]
        created = mailroomctl_json(
            runner, "webhooks", "create", client, receiver.url(), "--event", "email.queued"
        )
        assert created["secret"].startswith("whsec_")
        # WHEN the client sends a message
        answer = http(
            "POST",
            f"{runner.api_url}/v1/send",
            headers=runner.auth_headers(),
            body={"template": "welcome", "to": "ada@example.com", "props": SAMPLE_PROPS},
        )
        assert answer.status == 202, answer.body
        message_id = answer.json()["id"]

        # THEN the tick relays it and the dispatcher delivers email.queued, signed
        def delivered() -> dict[str, object] | None:
            for received in receiver.received:
                body = Webhook(created["secret"]).verify(received.body, received.headers)
                if body["data"]["message_id"] == message_id:
                    return dict(body)
            return None

        body = runner.wait_for("the email.queued webhook", delivered, timeout=150)
        assert body["type"] == "email.queued"
        # AND the operator sees the attempt
        log = mailroomctl_json(runner, "webhooks", "deliveries", client, created["id"])
        first = log["attempts"][0]
        assert first["status_code"] == 200

        def arrivals(webhook_id: str, count: int) -> list[dict[str, object]] | None:
            found = [
                dict(Webhook(created["secret"]).verify(r.body, r.headers))
                for r in receiver.received
                if r.headers["webhook-id"] == webhook_id
            ]
            return found if len(found) >= count else None

        # AND retries that delivery: the same event arrives again, same webhook-id
        retried = mailroomctl_json(
            runner, "webhooks", "retry", client, created["id"], str(first["delivery_id"])
        )
        assert retried["delivery_id"] != first["delivery_id"]
        again = runner.wait_for(
            "the retried delivery", lambda: arrivals(first["webhook_id"], 2), 60
        )
        assert again[1] == again[0]
        # AND sends a test event
        tested = mailroomctl_json(runner, "webhooks", "test", client, created["id"])
        (test_body,) = runner.wait_for(
            "the webhook.test delivery", lambda: arrivals(tested["webhook_id"], 1), 60
        )
        assert test_body["type"] == "webhook.test"
        # AND replays the last hour: the email.queued event comes a third time
        replayed = mailroomctl_json(
            runner,
            "webhooks",
            "replay",
            client,
            created["id"],
            "--start",
            (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "--end",
            (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
        )
        assert replayed["deliveries"] >= 1
        runner.wait_for("the replayed delivery", lambda: arrivals(first["webhook_id"], 3), 60)
        # AND removes the endpoint
        assert mailroomctl(runner, "webhooks", "delete", client, created["id"]).returncode == 0
