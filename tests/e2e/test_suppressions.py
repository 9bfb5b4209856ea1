"""The suppression list through the local runner: mailroomctl manages it, the send API obeys it."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlencode

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


# --- a client's own list, through the gateway (issue 15, item 4) ---------------


def _new_client(runner: Runner) -> dict[str, str]:
    answer = http(
        "POST",
        f"{runner.api_url}/admin/clients",
        headers={"Authorization": f"Bearer {runner.credentials['admin_token']}"},
        body={"name": f"e2e-supp-{uuid.uuid4().hex[:8]}"},
    )
    assert answer.status == 201, answer.body
    created: dict[str, str] = answer.json()
    return created


def _keys(client: dict[str, str]) -> dict[str, str]:
    return {"X-Api-Key": client["api_key"], "X-Api-Secret": client["api_secret"]}


def _raw(
    method: str, url: str, headers: dict[str, str], data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_client_manages_its_own_list_and_mail_obeys_it(runner: Runner) -> None:
    a, b = _new_client(runner), _new_client(runner)
    base = f"{runner.api_url}/v1/suppressions"
    address = f"e2e+{uuid.uuid4().hex[:6]}/x%y@bücher.example"
    # GIVEN client A suppresses an address holding '+', '/', '%' and a Unicode domain
    added = http("POST", base, headers=_keys(a), body={"address": address, "note": "A only"})
    assert added.status == 201, added.body
    # WHEN A sends to it (with the punycode spelling) THEN it is refused; B's mail is not
    puny = address.replace("bücher", "xn--bcher-kva")
    body = {"template": "welcome", "to": puny, "props": SAMPLE_PROPS}
    refused = http("POST", f"{runner.api_url}/v1/send", headers=_keys(a), body=body)
    assert (refused.status, refused.json()["error"]["code"]) == (422, "suppressed")
    assert http("POST", f"{runner.api_url}/v1/send", headers=_keys(b), body=body).status == 202
    # AND B cannot see or lift A's entry
    listed_b = http("GET", f"{base}?{urlencode({'address': address})}", headers=_keys(b))
    assert listed_b.json()["suppressions"] == []
    query = urlencode({"address": address})
    status, _, raw = _raw("DELETE", f"{base}?{query}", _keys(b))
    assert (status, json.loads(raw)["error"]["code"]) == (404, "suppression_not_found")
    # AND A lifts it through the percent-encoded query
    status, _, raw = _raw("DELETE", f"{base}?{query}", _keys(a))
    assert (status, json.loads(raw)) == (200, {"removed": 1, "globally_suppressed": False})


def test_import_export_round_trip_through_the_gateway_and_mailroomctl(
    runner: Runner, tmp_path: Path
) -> None:
    a, b = _new_client(runner), _new_client(runner)
    base = f"{runner.api_url}/v1/suppressions"
    tag = uuid.uuid4().hex[:6]
    csv_file = (
        f"email,reason,note\n{tag}-1@example.com,hard_bounce,x\nnot-an-address,,\n"
        f"{tag}-2@example.com,unsubscribe,\n"
    )
    # WHEN A imports a CSV with a bad line
    status, _, raw = _raw(
        "POST", f"{base}/import", {**_keys(a), "Content-Type": "text/csv"}, csv_file.encode()
    )
    report = json.loads(raw)
    # THEN the rest is imported and the bad line named
    assert status == 200, raw
    assert (report["created"], [e["line"] for e in report["errors"]]) == (2, [3])
    # WHEN A exports as JSON lines and B imports that file
    status, headers, exported = _raw("GET", f"{base}/export?format=jsonl", _keys(a))
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-ndjson")
    status, _, raw = _raw(
        "POST", f"{base}/import", {**_keys(b), "Content-Type": "application/x-ndjson"}, exported
    )
    assert (status, json.loads(raw)["created"], json.loads(raw)["failed"]) == (200, 2, 0)
    # AND an operator imports into the global list with mailroomctl
    global_file = tmp_path / "global.csv"
    global_file.write_text(f"address\n{tag}-global@example.com\n", encoding="utf-8")
    imported = mailroomctl(runner, "suppressions", "import", str(global_file))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["created"] == 1
    # THEN B's list holds A's two entries in full and the global one bare
    listed = http("GET", f"{base}?limit=1000", headers=_keys(b)).json()["suppressions"]
    mine = {e["address"]: e for e in listed if tag in e["address"]}
    assert {k: v["status"] for k, v in mine.items()} == {
        f"{tag}-1@example.com": "suppressed",
        f"{tag}-2@example.com": "suppressed",
        f"{tag}-global@example.com": "suppressed (global)",
    }
    assert mine[f"{tag}-1@example.com"]["note"] == "x"
    assert mine[f"{tag}-global@example.com"]["reason"] is None
    # AND mailroomctl imports into one client's list too, JSON lines by the file name
    client_file = tmp_path / "a.jsonl"
    client_file.write_text(json.dumps({"address": f"{tag}-3@example.com"}) + "\n", "utf-8")
    into_a = mailroomctl(runner, "suppressions", "import", str(client_file), "--client-id", a["id"])
    assert into_a.returncode == 0, into_a.stderr
    assert json.loads(into_a.stdout)["created"] == 1
    status, _, exported = _raw("GET", f"{base}/export", _keys(a))
    assert f"{tag}-3@example.com" in exported.decode()
