"""Templates on the local runner: mailroomctl upload/list/preview, a pinned send,
and the render deadline on the runner's handler threads."""

from __future__ import annotations

import email
import email.policy
import json
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    DELIVERY_TIMEOUT_SECONDS,
    REPO_ROOT,
    Runner,
    http,
    mailroomctl_json,
)

pytestmark = pytest.mark.e2e

RECEIPT = REPO_ROOT / "templates" / "receipt"
NESTED_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"


def _delivered(runner: Runner, message_id: str) -> EmailMessage:
    def find() -> EmailMessage | None:
        for path in sorted(runner.outbox.glob("*.eml")):
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            if message_id in str(parsed.get("Message-ID", "")):
                return parsed
        return None

    return runner.wait_for(f".eml for {message_id}", find, DELIVERY_TIMEOUT_SECONDS)


def test_an_uploaded_template_is_listed_previewed_and_sent_at_its_pinned_version(
    runner: Runner, tmp_path: Path
) -> None:
    # GIVEN the receipt folder uploaded twice under a new name, the second changed
    name = f"receipt-{uuid.uuid4().hex[:8]}"
    first = mailroomctl_json(runner, "templates", "upload", str(RECEIPT), "--name", name)
    changed = tmp_path / "receipt"
    changed.mkdir()
    for part in ("html", "text", "schema.json", "sample.json"):
        (changed / part).write_text((RECEIPT / part).read_text())
    (changed / "subject").write_text("Second version {{ order.number }}")
    second = mailroomctl_json(runner, "templates", "upload", str(changed), "--name", name)
    assert (first["version"], second["version"]) == (1, 2)
    assert first["warnings"] == []

    # WHEN it is listed and previewed
    listed = {t["name"]: t for t in mailroomctl_json(runner, "templates", "list")["templates"]}
    html_out = tmp_path / "preview.html"
    preview = mailroomctl_json(runner, "templates", "preview", name, "--html-out", str(html_out))

    # THEN both versions are there, and the preview renders the newest sample
    assert [v["version"] for v in listed[name]["versions"]] == [1, 2]
    assert listed["welcome"]["kind"] == "file"
    assert preview["subject"] == "Second version NW-100482"
    assert "Merino crew sweater" in html_out.read_text()

    # AND a send pinned to version 1 goes out with version 1's subject
    props = json.loads((RECEIPT / "sample.json").read_text())
    answer = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers=runner.auth_headers(),
        body={"template": name, "template_version": 1, "to": "ada@example.com", "props": props},
    )
    assert answer.status == 202, answer.body
    sent = _delivered(runner, answer.json()["id"])
    assert str(sent["Subject"]).startswith("Your Northwind Outfitters receipt #NW-100482")


def test_a_runaway_template_is_stopped_on_the_runners_threads(runner: Runner) -> None:
    # GIVEN a template that would loop 10^10 times (it compiles fine)
    name = f"runaway-{uuid.uuid4().hex[:8]}"
    uploaded = _ctl_upload(runner, name, NESTED_LOOP)
    assert uploaded["version"] == 1
    # WHEN a send asks for it (the send handler runs on a werkzeug thread)
    started = time.monotonic()
    answer = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers=runner.auth_headers(),
        body={"template": name, "to": "ada@example.com"},
    )
    # THEN its trial render is stopped and the send refused, and the API goes on
    assert answer.status == 422, answer.body
    assert answer.json()["error"]["code"] == "render_timeout"
    assert time.monotonic() - started < 5
    assert http("GET", f"{runner.api_url}/health").status == 200


def _ctl_upload(runner: Runner, name: str, html: str) -> Any:
    folder = Path(runner.local_dir) / name
    folder.mkdir()
    (folder / "subject").write_text("Runaway")
    (folder / "html").write_text(html)
    (folder / "text").write_text("text")
    return mailroomctl_json(runner, "templates", "upload", str(folder))


def _new_client(runner: Runner) -> tuple[str, dict[str, str]]:
    answer = http(
        "POST",
        f"{runner.api_url}/admin/clients",
        headers={"Authorization": f"Bearer {runner.credentials['admin_token']}"},
        body={"name": f"tenant-{uuid.uuid4().hex[:8]}"},
    )
    assert answer.status == 201, answer.body
    created = answer.json()
    return created["id"], {"X-Api-Key": created["api_key"], "X-Api-Secret": created["api_secret"]}


def test_a_clients_own_template_through_the_runner_is_invisible_to_another(
    runner: Runner,
) -> None:
    # GIVEN two clients; the first uploads a template of its own through /v1/templates
    (_, owner), (stranger_id, stranger) = _new_client(runner), _new_client(runner)
    name = f"mine-{uuid.uuid4().hex[:8]}"
    upload = http(
        "POST",
        f"{runner.api_url}/v1/templates",
        headers=owner,
        body={
            "name": name,
            "subject": "Hello {{ who }}",
            "html": "<p>only mine</p>",
            "text": "only mine",
            "sample": {"who": "Ada"},
        },
    )
    assert upload.status == 201, upload.body
    assert upload.json()["version"] == 1

    # WHEN the owner lists, previews and sends with it
    listed = http("GET", f"{runner.api_url}/v1/templates?limit=100", headers=owner).json()
    preview = http("POST", f"{runner.api_url}/v1/templates/{name}/preview", headers=owner, body={})
    sent = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers=owner,
        body={"template": name, "to": "ada@example.com", "props": {"who": "Ada"}},
    )
    # THEN it is there, marked as its own, renders, and goes out
    assert {"name": name, "kind": "client", "active": True}.items() <= next(
        entry for entry in listed["templates"] if entry["name"] == name
    ).items()
    assert (preview.status, preview.json()["subject"]) == (200, "Hello Ada")
    assert sent.status == 202, sent.body
    assert "only mine" in str(_delivered(runner, sent.json()["id"]).get_body(("html",)))

    # AND for the other client it does not exist: the answers of a name nobody has
    nowhere = f"none-{uuid.uuid4().hex[:8]}"
    for probe in (name, nowhere):
        previewed = http(
            "POST", f"{runner.api_url}/v1/templates/{probe}/preview", headers=stranger, body={}
        )
        refused = http(
            "POST",
            f"{runner.api_url}/v1/send",
            headers=stranger,
            body={"template": probe, "to": "ada@example.com", "props": {"who": "Ada"}},
        )
        assert (previewed.status, previewed.json()["error"]["code"]) == (404, "template_not_found")
        assert (refused.status, refused.json()["error"]["code"]) == (422, "unknown_template")
        assert previewed.json()["error"]["message"] == f"there is no template named '{probe}'"
    theirs = http("GET", f"{runner.api_url}/v1/templates?limit=100", headers=stranger).json()
    assert name not in {entry["name"] for entry in theirs["templates"]}

    # AND an operator can give the other client a template of that name for it alone
    given = mailroomctl_json(
        runner, "templates", "upload", str(RECEIPT), "--name", name, "--client-id", stranger_id
    )
    assert given["version"] == 1
    owned = mailroomctl_json(runner, "templates", "list", "--client-id", stranger_id)
    assert [(t["name"], t["client_id"]) for t in owned["templates"]] == [(name, stranger_id)]
    again = http("POST", f"{runner.api_url}/v1/templates/{name}/preview", headers=stranger, body={})
    assert again.status == 200, again.body
    assert again.json()["subject"].startswith("Your Northwind Outfitters receipt")
