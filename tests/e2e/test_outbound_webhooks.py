"""Outbound webhooks through the local runner: the template's tick and dispatcher run them."""

from __future__ import annotations

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
        # AND the operator sees the attempt, then removes the endpoint
        log = mailroomctl_json(runner, "webhooks", "deliveries", client, created["id"])
        assert log["attempts"][0]["status_code"] == 200
        assert mailroomctl(runner, "webhooks", "delete", client, created["id"]).returncode == 0
