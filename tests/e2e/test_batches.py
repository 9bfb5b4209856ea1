"""A bulk batch through the local runner (issue 17): API, planner, worker, SMTP sink."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.e2e.harness import SAMPLE_PROPS, Runner, http

pytestmark = pytest.mark.e2e

BATCH_SIZE = 2000
# Two thousand sends on two shared cores: generous, and polled, so a fast
# machine finishes in a fraction of it.
BATCH_TIMEOUT_SECONDS = 900
# The runner's functions take turns, and moto's SQS slows with the queue's
# depth: a read may wait for a planner or worker turn of several seconds.
READ_TIMEOUT_SECONDS = 120
FINAL = {"sent", "delivered", "bounced", "failed", "spam", "rejected", "duplicate", "suppressed"}


def test_a_2000_recipient_batch_ends_with_an_outcome_for_every_recipient(runner: Runner) -> None:
    # GIVEN 2,000 recipients, three with bad addresses and two listed twice
    people: list[dict[str, Any]] = [
        {
            "to": f"reader{i}@example.com",
            "props": {"first_name": f"Reader {i}"},
            "metadata": {"i": i},
        }
        for i in range(BATCH_SIZE)
    ]
    for bad in (10, 500, 1500):
        people[bad]["to"] = f"broken-{bad}"
    people[20]["to"] = people[21]["to"]
    people[30]["to"] = people[31]["to"].upper()

    # WHEN the batch is posted and the runner's planner and worker take it
    accepted = http(
        "POST",
        f"{runner.api_url}/v1/batches",
        headers=runner.auth_headers(),
        body={"template": "welcome", "props": SAMPLE_PROPS, "recipients": people},
    )
    assert accepted.status == 202, accepted.body
    batch_id = accepted.json()["id"]

    def finished() -> dict[str, Any] | None:
        body = read(runner, f"/v1/batches/{batch_id}")
        return body if body["status"] == "finished" else None

    progress = runner.wait_for("the batch to finish", finished, BATCH_TIMEOUT_SECONDS)

    # THEN the counters add up: 1,995 sent, 3 rejected, 2 duplicates, nothing queued
    assert progress["total"] == progress["planned"] == BATCH_SIZE
    assert (progress["rejected"], progress["duplicates"], progress["queued"]) == (3, 2, 0)
    assert progress["sent"] + progress["failed"] == BATCH_SIZE - 5
    assert progress["finished_at"] is not None
    # ... and paging the recipients finds every index once, each with a final outcome
    seen: dict[int, str] = {}
    cursor: str | None = None
    while True:
        query = "limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = read(runner, f"/v1/batches/{batch_id}/recipients?{query}")
        for recipient in page["recipients"]:
            assert recipient["index"] not in seen
            seen[recipient["index"]] = recipient["status"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == list(range(BATCH_SIZE))
    assert set(seen.values()) <= FINAL
    assert seen[10] == "rejected"
    assert seen[21] == "duplicate"
    assert len(list(runner.outbox.glob("*.eml"))) >= progress["sent"]


def read(runner: Runner, path: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{runner.api_url}{path}", headers=runner.auth_headers())
    with urllib.request.urlopen(request, timeout=READ_TIMEOUT_SECONDS) as answer:
        assert answer.status == 200
        body: dict[str, Any] = json.loads(answer.read())
        return body
