"""A client's whole life through mailroomctl and the local runner's functions."""

from __future__ import annotations

import pytest

from tests.e2e.harness import SAMPLE_PROPS, HttpAnswer, Runner, http, mailroomctl_json

pytestmark = pytest.mark.e2e


def send(runner: Runner, key: str, secret: str) -> HttpAnswer:
    return http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers={"X-Api-Key": key, "X-Api-Secret": secret},
        body={"template": "welcome", "to": "ada@example.com", "props": SAMPLE_PROPS},
    )


def test_a_client_from_creation_to_rotation(runner: Runner) -> None:
    # GIVEN a client created with mailroomctl
    created = mailroomctl_json(
        runner, "clients", "create", "e2e-acme", "--rate-limit", "100", "--quota-limit", "10"
    )
    key, secret = created["api_key"], created["api_secret"]
    assert key.startswith("mr_live_")

    # WHEN it sends, THEN the message is accepted with its rate-limit headers
    accepted = send(runner, key, secret)
    assert accepted.status == 202, accepted.body
    headers = {name.lower(): value for name, value in accepted.headers.items()}
    assert (headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"]) == ("100", "99")
    assert "x-ratelimit-reset" in headers

    # AND list and show know it, with the message counted against its quota
    listed = mailroomctl_json(runner, "clients", "list")
    assert key in [client["api_key"] for client in listed["clients"]]
    shown = mailroomctl_json(runner, "clients", "show", key)
    assert (shown["usage"]["used"], shown["usage"]["limit"]) == (1, 10)

    # WHEN its quota is lowered to what it has used, THEN the next send is refused
    mailroomctl_json(runner, "clients", "update", created["id"], "--quota-limit", "1")
    refused = send(runner, key, secret)
    assert (refused.status, refused.json()["error"]["code"]) == (429, "quota_exceeded")

    # WHEN it is suspended, THEN it gets 403 at once; reactivated, it is back
    mailroomctl_json(runner, "clients", "update", key, "--quota-limit", "10")
    assert mailroomctl_json(runner, "clients", "suspend", key)["status"] == "suspended"
    assert send(runner, key, secret).status == 403
    assert mailroomctl_json(runner, "clients", "reactivate", key)["status"] == "active"
    assert send(runner, key, secret).status == 202

    # WHEN the secret is rotated without grace, THEN only the new one works
    rotated = mailroomctl_json(runner, "clients", "rotate-secret", key, "--grace-seconds", "0")
    assert send(runner, key, secret).status == 401
    assert send(runner, key, rotated["api_secret"]).status == 202

    # AND the quota counter agrees with the messages table
    [result] = mailroomctl_json(runner, "quota", "reconcile", key)["results"]
    assert result["counted"] == result["counter_after"] == 3

    # AND every admin action is in the audit log, in the order they happened
    audit = mailroomctl_json(runner, "audit", "--target", created["id"])
    assert [entry["action"] for entry in audit["entries"]] == [
        "client.create",
        "client.update",
        "client.update",
        "client.suspend",
        "client.reactivate",
        "client.rotate_secret",
        "quota.reconcile",
    ]

    # AND neither secret was ever logged by any function
    output = runner.output()
    assert secret not in output
    assert rotated["api_secret"] not in output


def test_a_client_key_pair_does_not_open_admin_routes(runner: Runner) -> None:
    answer = http(
        "GET",
        f"{runner.api_url}/admin/clients",
        headers={
            "X-Api-Key": runner.credentials["api_key"],
            "X-Api-Secret": runner.credentials["api_secret"],
        },
    )
    assert (answer.status, answer.json()["error"]["code"]) == (401, "unauthorized")


def test_sandbox_mode_through_mailroomctl_reaches_no_smtp_sink(runner: Runner) -> None:
    # GIVEN a client put in sandbox mode with mailroomctl
    created = mailroomctl_json(runner, "clients", "create", "e2e-sandbox")
    key, secret = created["api_key"], created["api_secret"]
    updated = mailroomctl_json(runner, "clients", "update", key, "--sandbox-mode", "on")
    assert updated["sandbox_mode"] is True
    # WHEN its live key sends to a simulated bouncing address
    accepted = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers={"X-Api-Key": key, "X-Api-Secret": secret},
        body={
            "template": "welcome",
            "to": "bounced+e2e@sim.mailroom.invalid",
            "props": SAMPLE_PROPS,
        },
    )
    assert accepted.status == 202, accepted.body
    assert accepted.json()["mode"] == "test"
    message_id = accepted.json()["id"]

    # THEN the local runner's worker and feedback path make it read bounced
    def bounced() -> dict[str, object] | None:
        answer = http(
            "GET",
            f"{runner.api_url}/v1/messages/{message_id}",
            headers={"X-Api-Key": key, "X-Api-Secret": secret},
        )
        view = answer.json()
        return view if view["status"] == "bounced" else None

    view = runner.wait_for("the simulated bounce", bounced, 30)
    assert (view["mode"], view["provider"]) == ("test", "sandbox")
    # AND the SMTP sink never saw it
    assert not [p for p in runner.outbox.glob("*.eml") if message_id in p.read_text()]
    # AND turned off, the same key is live again
    updated = mailroomctl_json(runner, "clients", "update", key, "--sandbox-mode", "off")
    assert updated["sandbox_mode"] is False
    live = send(runner, key, secret)
    assert (live.status, live.json()["mode"]) == (202, "live")


def test_scoped_keys_through_mailroomctl_and_the_local_runner(runner: Runner) -> None:
    # GIVEN a client and a sending-only key made for it with mailroomctl
    client = mailroomctl_json(runner, "clients", "create", "e2e-keys")
    made = mailroomctl_json(
        runner, "keys", "create", client["id"], "--name", "ci", "--scope", "email:send"
    )
    assert made["scopes"] == ["email:send"]
    # WHEN it sends with its Bearer token THEN the message is accepted
    by_token = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers={"Authorization": f"Bearer {made['token']}"},
        body={"template": "welcome", "to": "ada@example.com", "props": SAMPLE_PROPS},
    )
    assert by_token.status == 202, by_token.body
    # AND it may not manage keys: 403 naming the scope
    listing = http(
        "GET",
        f"{runner.api_url}/v1/api-keys",
        headers={"Authorization": f"Bearer {made['token']}"},
    )
    assert (listing.status, listing.json()["error"]["code"]) == (403, "insufficient_scope")
    # WHEN mailroomctl lists, rotates and revokes it
    listed = mailroomctl_json(runner, "keys", "list", client["api_key"])
    assert {k["id"] for k in listed["keys"]} == {client["api_key"], made["id"]}
    rotated = mailroomctl_json(
        runner, "keys", "rotate", client["id"], made["id"], "--grace-seconds", "0"
    )
    assert send(runner, made["id"], made["secret"]).status == 401
    assert send(runner, made["id"], rotated["secret"]).status == 202
    revoked = mailroomctl_json(runner, "keys", "revoke", client["id"], made["id"])
    assert revoked["status"] == "revoked"
    # THEN the revoked key is refused with its own code
    refused = send(runner, made["id"], rotated["secret"])
    assert (refused.status, refused.json()["error"]["code"]) == (401, "api_key_revoked")
    # AND no secret or token was logged by any function
    output = runner.output()
    for shown in (made["secret"], made["token"], rotated["secret"], rotated["token"]):
        assert shown not in output
