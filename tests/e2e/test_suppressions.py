"""The suppression list through the local runner: mailroomctl manages it, the send API obeys it."""

from __future__ import annotations

import csv
import io
import json
import uuid

import pytest

from tests.e2e.harness import SAMPLE_PROPS, Runner, http, mailroomctl

pytestmark = pytest.mark.e2e


def _send(runner: Runner, to: str) -> tuple[int, dict[str, object]]:
    answer = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers=runner.auth_headers(),
        body={"template": "welcome", "to": to, "props": SAMPLE_PROPS},
    )
    return answer.status, answer.json()


def test_an_address_added_with_mailroomctl_is_refused_until_removed(runner: Runner) -> None:
    address = f"blocked-{uuid.uuid4().hex[:8]}@example.com"
    # GIVEN an operator suppresses an address for every client
    added = mailroomctl(runner, "suppressions", "add", address, "--note", "asked to stop")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["scope"] == "global"
    # WHEN a client sends to it
    status, body = _send(runner, address)
    # THEN the API refuses it with `suppressed`
    assert status == 422
    assert body["error"]["code"] == "suppressed"  # type: ignore[index]
    # AND the entry shows up in the list and in the export
    listed = mailroomctl(runner, "suppressions", "list", "--address", address)
    assert [e["address"] for e in json.loads(listed.stdout)["suppressions"]] == [address]
    exported = mailroomctl(runner, "suppressions", "export", "--global")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert {"address": address, "reason": "manual", "note": "asked to stop"}.items() <= next(
        row for row in rows if row["address"] == address
    ).items()
    # WHEN the operator lifts it
    removed = mailroomctl(runner, "suppressions", "remove", address)
    assert (removed.returncode, json.loads(removed.stdout)) == (0, {"removed": 1})
    # THEN mail to it is accepted again
    assert _send(runner, address)[0] == 202


def test_a_punycode_address_is_removed_with_the_string_it_was_added_with(
    runner: Runner,
) -> None:
    local = f"idn-{uuid.uuid4().hex[:8]}"
    punycode, unicode = f"{local}@xn--bcher-kva.example", f"{local}@bücher.example"
    # GIVEN an operator suppresses an address written with a punycode domain
    added = mailroomctl(runner, "suppressions", "add", punycode)
    assert added.returncode == 0, added.stderr
    # WHEN a client sends to the same mailbox written in Unicode
    # THEN it is refused: one entry, whichever way the domain is written
    status, body = _send(runner, unicode)
    assert (status, body["error"]["code"]) == (422, "suppressed")  # type: ignore[index]
    listed = mailroomctl(runner, "suppressions", "list", "--address", punycode)
    assert [e["address"] for e in json.loads(listed.stdout)["suppressions"]] == [unicode]
    # AND the operator removes it with the very string they added
    removed = mailroomctl(runner, "suppressions", "remove", punycode)
    assert (removed.returncode, json.loads(removed.stdout)) == (0, {"removed": 1}), removed.stderr


def test_removing_an_absent_entry_says_so(runner: Runner) -> None:
    result = mailroomctl(runner, "suppressions", "remove", "nobody-here@example.com")
    assert result.returncode == 1
    assert "404 suppression_not_found" in result.stderr


def test_the_webhook_route_is_served_with_the_error_shape(runner: Runner) -> None:
    # The provider webhooks answer through the gateway; an unknown provider is 404.
    answer = http("POST", f"{runner.api_url}/webhooks/postmark", body=[{"event": "delivered"}])
    assert answer.status == 404
    assert answer.json()["error"]["code"] == "unknown_provider"
