"""Issue 16 item 5 and the list headers: what a send may add to its message, on fakes."""

from __future__ import annotations

import uuid
from email import message_from_bytes
from email.policy import default
from typing import Any

import pytest

from mailroom.domain.mime import build_mime, from_domain
from mailroom.domain.model import Message, RenderedEmail, SendOptions
from mailroom.domain.outgoing_headers import SenderPolicy, feedback_id
from mailroom.domain.return_path import SigningKeyring, match_return_path, verify_unsubscribe_token
from tests.unit.test_api import Api, _welcome

KEYS = SigningKeyring.from_setting("k1:" + "Q" * 43)
# Every sender here has its own verified domain with the bounce MX published.
POLICY = SenderPolicy(
    keyring=KEYS,
    public_base_url="https://mail.example.com",
    receives_bounces=lambda client_id, domain: True,
)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"From": "ceo@example.com"}, "header_not_allowed"),
        ({"to": "x@example.com"}, "header_not_allowed"),
        ({"DKIM-Signature": "v=1"}, "header_not_allowed"),
        ({"Return-Path": "<x@example.com>"}, "header_not_allowed"),
        ({"List-Unsubscribe": "<https://x>"}, "header_not_allowed"),
        ({"Feedback-ID": "a:b:c"}, "header_not_allowed"),
        ({"Content-Type": "text/plain"}, "header_not_allowed"),
        ({"X-Mailroom-Trace": "1"}, "header_not_allowed"),
        ({"X Bad Name": "1"}, "header_not_allowed"),
        ({"X-Ok": "line\r\nBcc: victim@example.com"}, "header_injection"),
        ({"X-Ok\nBcc": "v"}, "header_injection"),
        ({"X-Long": "x" * 901}, "header_not_allowed"),
    ],
)
def test_refused_headers_get_a_422_and_nothing_is_written(
    headers: dict[str, str], code: str
) -> None:
    api = Api()
    status, answer, _ = api.call(api.send_event(_welcome(headers=headers)))
    assert (status, answer["error"]["code"]) == (422, code), answer
    assert api.uow.messages.rows == {}


@pytest.mark.parametrize(
    "overrides",
    [
        {"bulk": True, "to": ["a@example.com", "b@example.com"]},
        {"bulk": True, "cc": "c@example.com"},
        {"tags": ["has space"]},
        {"campaign": "no/slash"},
        {"unsubscribe_url": "http://plain.example.com/u"},
    ],
)
def test_bad_bulk_tag_and_campaign_input_is_422(overrides: dict[str, Any]) -> None:
    api = Api()
    status, answer, _ = api.call(api.send_event(_welcome(**overrides)))
    assert status == 422, answer
    assert api.uow.messages.rows == {}


def test_allowed_headers_tags_and_bulk_are_stored_and_shown() -> None:
    api = Api()
    status, answer, _ = api.call(
        api.send_event(
            _welcome(
                headers={"X-Campaign-Week": "49", "In-Reply-To": "<a@b>"},
                tags=["welcome", "q4"],
                bulk=True,
                campaign="winter-sale",
            )
        )
    )
    assert status == 202, answer
    (message,) = api.uow.messages.rows.values()
    assert message.options == SendOptions(
        headers=(("X-Campaign-Week", "49"), ("In-Reply-To", "<a@b>")),
        tags=("welcome", "q4"),
        bulk=True,
        campaign="winter-sale",
    )


def _message(**options: Any) -> Message:
    return Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name="welcome",
        from_address="Acme <news@acme.example.com>",
        to=["ada@example.com"],
        options=SendOptions(**options),
    )


RENDERED = RenderedEmail(subject="Hello", html="<p>Hi</p>", text="Hi")


@pytest.mark.parametrize("stdlib", [False, True])
def test_bulk_mail_carries_one_click_unsubscribe_and_a_verp_return_path(stdlib: bool) -> None:
    message = _message(bulk=True, headers=(("X-Campaign-Week", "49"),), campaign="winter")
    if stdlib:
        message.to = ["Ädä <ada@example.com>"]  # a name the fast builder hands on
    domain = from_domain(message)
    email = build_mime(
        message,
        RENDERED,
        POLICY.headers(message, domain),
        POLICY.return_path(message, domain),
    )
    parsed = message_from_bytes(email.mime, policy=default)
    unsubscribe = str(parsed["List-Unsubscribe"])
    url, mailto = (part.strip().strip("<>") for part in unsubscribe.split(","))
    token = url.rpartition("/u/")[2]
    assert url.startswith("https://mail.example.com/u/")
    assert verify_unsubscribe_token(KEYS, token) == message.id
    assert mailto == f"mailto:u+{token}@bounces.acme.example.com?subject=unsubscribe"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-Campaign-Week"] == "49"
    assert parsed["Feedback-ID"] == f"winter:{message.client_id.hex[:16]}:bulk:mailroom"
    # No line passes RFC 5322's limit, and the URL was not turned into encoded words.
    assert "=?" not in unsubscribe
    assert max(len(line) for line in email.mime.split(b"\r\n")) <= 998
    assert email.mail_from.endswith("@bounces.acme.example.com")
    assert match_return_path(KEYS, [email.mail_from]).message_id == message.id


def test_transactional_mail_has_no_list_headers_and_a_client_url_replaces_ours() -> None:
    plain = _message()
    email = build_mime(plain, RENDERED, POLICY.headers(plain, "acme.example.com"))
    parsed = message_from_bytes(email.mime, policy=default)
    assert parsed["List-Unsubscribe"] is None
    assert parsed["Feedback-ID"] == feedback_id(plain)
    own = _message(bulk=True, unsubscribe_url="https://acme.example.com/stop?u=1")
    email = build_mime(own, RENDERED, POLICY.headers(own, "acme.example.com"))
    parsed = message_from_bytes(email.mime, policy=default)
    assert parsed["List-Unsubscribe"] == "<https://acme.example.com/stop?u=1>"


def test_without_keys_the_from_address_stays_the_envelope_sender() -> None:
    message = _message(bulk=True)
    policy = SenderPolicy(keyring=None, public_base_url="https://mail.example.com")
    email = build_mime(message, RENDERED, policy.headers(message, "acme.example.com"))
    assert email.mail_from == "news@acme.example.com"
    assert message_from_bytes(email.mime)["List-Unsubscribe"] is None


def test_a_sender_without_its_own_bounce_domain_uses_the_platforms() -> None:
    # GIVEN a platform bounce domain, and a client whose From domain is not its
    # verified domain with the bounce MX (another client's, or nobody's)
    asked: list[tuple[uuid.UUID, str]] = []

    def receives(client_id: uuid.UUID, domain: str) -> bool:
        asked.append((client_id, domain))
        return False

    policy = SenderPolicy(
        KEYS,
        "https://m.example.com",
        bounce_domain="bounces.mail.example",
        receives_bounces=receives,
    )
    message = _message(bulk=True)
    # THEN the return path and the unsubscribe mailbox are on the platform's domain
    assert str(policy.return_path(message, "acme.example.com")).endswith("@bounces.mail.example")
    headers = dict(policy.headers(message, "acme.example.com"))
    assert "@bounces.mail.example?subject=unsubscribe>" in headers["List-Unsubscribe"]
    assert "bounces.acme.example.com" not in headers["List-Unsubscribe"]
    # AND the question was about this client and its From domain
    assert asked[0] == (message.client_id, "acme.example.com")


def test_with_no_bounce_domain_at_all_the_from_address_stays_the_envelope_sender() -> None:
    # GIVEN no platform bounce domain and a From domain that is not the client's own
    policy = SenderPolicy(KEYS, "https://m.example.com", receives_bounces=lambda c, d: False)
    message = _message(bulk=True)
    # THEN there is no VERP (no address of ours would receive the bounce) ...
    assert policy.return_path(message, "acme.example.com") is None
    email = build_mime(message, RENDERED, policy.headers(message, "acme.example.com"))
    assert email.mail_from == "news@acme.example.com"
    # ... and one-click unsubscribe keeps only its HTTPS link
    assert message_from_bytes(email.mime)["List-Unsubscribe"].startswith(
        "<https://m.example.com/u/"
    )
    assert "mailto:" not in message_from_bytes(email.mime)["List-Unsubscribe"]


def test_a_verified_sender_uses_its_own_bounce_domain_over_the_platforms() -> None:
    policy = SenderPolicy(
        KEYS,
        "https://m.example.com",
        bounce_domain="bounces.mail.example",
        receives_bounces=lambda c, d: d == "acme.example.com",
    )
    message = _message()
    assert str(policy.return_path(message, "acme.example.com")).endswith(
        "@bounces.acme.example.com"
    )
    assert str(policy.return_path(message, "other.example")).endswith("@bounces.mail.example")


def test_an_internationalised_from_domain_gets_an_a_label_return_path() -> None:
    message = _message()
    message.from_address = "Bücher <news@bücher.example>"
    address = POLICY.return_path(message, from_domain(message))
    assert address is not None
    assert address.endswith("@bounces.xn--bcher-kva.example")
    assert match_return_path(KEYS, [address]).message_id == message.id
