"""Issue 17 through the local runner: a batch with inline content reaches the mail sink."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from tests.e2e.harness import DELIVERY_TIMEOUT_SECONDS, SAMPLE_PROPS, Runner, http

pytestmark = pytest.mark.e2e


def _delivered(runner: Runner, message_id: str) -> EmailMessage:
    def find() -> EmailMessage | None:
        for path in sorted(runner.outbox.glob("*.eml")):
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            if message_id in str(parsed.get("Message-ID", "")):
                return parsed
        return None

    return runner.wait_for(f".eml for {message_id}", find, DELIVERY_TIMEOUT_SECONDS)


def test_a_permissive_batch_is_delivered_item_by_item(runner: Runner) -> None:
    # GIVEN a batch of inline and template items, one of them invalid
    inline = {
        "subject": "Hi {{ first_name|'Customer' }}",
        "html": "<p>{{ order.lines.0.sku }} for {{ first_name|'Customer' }}</p>",
    }
    items = [
        {**inline, "to": "ada@example.com", "props": {"order": {"lines": [{"sku": "A-1"}]}}},
        {"template": "welcome", "to": "bob@example.com", "props": SAMPLE_PROPS},
        {**inline, "to": "cy@example.com", "props": {}},
        {
            **inline,
            "to": "dee@example.com",
            "personalizations": {"first_name": "Dee", "order": {"lines": [{"sku": "<B&2>"}]}},
        },
    ]
    # WHEN it is sent through the runner
    answer = http(
        "POST",
        f"{runner.api_url}/v1/send/batch",
        headers={**runner.auth_headers(), "X-Batch-Validation": "permissive"},
        body=items,
    )
    # THEN three are accepted and the one without its props is named by index
    assert answer.status == 200, answer.body
    body = answer.json()
    assert [(e["index"], e["code"]) for e in body["errors"]] == [(2, "missing_prop")]
    ids = {entry["index"]: entry["id"] for entry in body["data"]}
    assert sorted(ids) == [0, 1, 3]
    # AND the worker delivers each, personalised and escaped
    first = _delivered(runner, ids[0])
    assert first["Subject"] == "Hi Customer"
    last = _delivered(runner, ids[3])
    assert last["Subject"] == "Hi Dee"
    html = last.get_body(preferencelist=("html",))
    assert html is not None
    assert "&lt;B&amp;2&gt; for Dee" in html.get_content()
    assert _delivered(runner, ids[1])["To"] == "bob@example.com"
