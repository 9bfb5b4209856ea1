"""Domain values: addresses, send requests, plain text, MIME."""

from __future__ import annotations

import email
import uuid
from email import policy
from typing import Any

import pytest
from pydantic import ValidationError

from mailroom.domain.addresses import Mailbox, reject_line_breaks
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import HeaderInjection, InvalidRequest
from mailroom.domain.mime import build_mime
from mailroom.domain.model import Message, RenderedEmail
from mailroom.domain.plaintext import html_to_text


class TestMailbox:
    def test_display_name_and_domain_case_are_normalised(self) -> None:
        # GIVEN an address with a display name and an upper-case domain
        # WHEN it is parsed
        mailbox = Mailbox.parse("to", "Ada Lovelace <ada@Example.COM>")
        # THEN the domain is lower-cased and the display name kept
        assert mailbox.address == "ada@example.com"
        assert mailbox.header_value() == "Ada Lovelace <ada@example.com>"

    @pytest.mark.parametrize(
        ("raw", "stored"),
        [
            # Stored unencoded (issue 14): the MIME builder encodes, once.
            ("Zoë <zoe@bücher.example>", "Zoë <zoe@bücher.example>"),
            ("Zoë <zoe@xn--bcher-kva.example>", "Zoë <zoe@bücher.example>"),
            ('"Doe, Jane" <jane@example.com>', '"Doe, Jane" <jane@example.com>'),
            # A literal "=?" is quoted, so it is never taken for an encoded word
            ('"=?utf-8?q?x?=" <a@example.com>', '"=?utf-8?q?x?=" <a@example.com>'),
        ],
    )
    def test_the_stored_form_is_unencoded_and_parses_back_to_itself(
        self, raw: str, stored: str
    ) -> None:
        mailbox = Mailbox.parse("to", raw)
        assert mailbox.header_value() == stored
        assert Mailbox.parse("to", stored) == mailbox

    @pytest.mark.parametrize(
        "raw", ["not-an-address", "a@b", "two@example.com, three@example.com", "", "a b@c.com"]
    )
    def test_invalid_addresses_are_refused(self, raw: str) -> None:
        with pytest.raises(InvalidRequest) as caught:
            Mailbox.parse("to", raw)
        assert caught.value.code == "validation_error"
        assert caught.value.details[0]["field"] == "to"

    @pytest.mark.parametrize("value", ["a@example.com\r\nBcc: x@evil.test", "hi\nthere", "x\ry"])
    def test_line_breaks_are_header_injection(self, value: str) -> None:
        with pytest.raises(HeaderInjection) as caught:
            reject_line_breaks("subject", value)
        assert caught.value.code == "header_injection"


class TestSendRequest:
    def _validate(self, **body: Any) -> SendRequest:
        return SendRequest.model_validate({"template": "welcome", "to": "a@example.com", **body})

    def test_single_address_becomes_a_list(self) -> None:
        request = self._validate(to="Ada <ada@example.com>", cc="b@example.com")
        assert request.to == ["Ada <ada@example.com>"]
        assert request.cc == ["b@example.com"]
        assert request.recipient_count == 2

    def test_from_alias_is_read(self) -> None:
        assert self._validate(**{"from": "Acme <noreply@acme.example.com>"}).from_ == (
            "Acme <noreply@acme.example.com>"
        )

    @pytest.mark.parametrize(
        ("body", "error_type"),
        [
            ({"props": [1, 2]}, "dict_type"),
            ({"props": "x"}, "dict_type"),
            ({"to": "nope"}, "validation_error"),
            ({"to": []}, "too_short"),
            ({"template": "../etc/passwd"}, "string_pattern_mismatch"),
            ({"subject": "Hi\r\nBcc: victim@example.com"}, "header_injection"),
            ({"reply_to": "x@example.com\nBcc: y@example.com"}, "header_injection"),
            ({"unknown_field": 1}, "extra_forbidden"),
        ],
    )
    def test_bad_fields_are_refused_with_a_type(
        self, body: dict[str, Any], error_type: str
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            self._validate(**body)
        assert error_type in {error["type"] for error in caught.value.errors()}


def test_plain_text_keeps_structure_and_links() -> None:
    html = (
        "<html><head><style>p{color:red}</style></head><body><h1>Hello</h1>"
        "<p>Click <a href='https://x.test/a'>here</a></p><table><tr><td>1</td><td>one</td></tr>"
        "<tr><td>2</td><td>two</td></tr></table></body></html>"
    )
    text = html_to_text(html)
    assert "color" not in text
    assert "Hello\n" in text
    assert "here (https://x.test/a)" in text
    assert "1 one" in text
    assert "2 two" in text


def _message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "id": uuid.UUID("0b7f8e2a-4c1d-4e5f-9a6b-7c8d9e0f1a2b"),
        "client_id": uuid.uuid4(),
        "trace_id": "t1",
        "template_name": "welcome",
        "from_address": "Acme <noreply@acme.example.com>",
        "to": ["Ada <ada@example.com>"],
        "cc": ["cc@example.com"],
        "bcc": ["hidden@example.com"],
        "reply_to": ["help@acme.example.com"],
    }
    fields.update(overrides)
    return Message(**fields)


def test_mime_is_multipart_alternative_and_hides_bcc() -> None:
    # GIVEN a message with cc and bcc recipients and a non-ASCII subject
    message = _message()
    rendered = RenderedEmail(subject="Grüße, Ada", html="<p>Hi</p>", text="Hi\n")
    # WHEN its MIME form is built and parsed back with the stdlib parser
    outgoing = build_mime(message, rendered)
    parsed = email.message_from_bytes(outgoing.mime, policy=policy.default)
    # THEN headers are right, Bcc is only on the envelope, and both parts exist
    assert parsed["Subject"] == "Grüße, Ada"
    assert parsed["From"] == "Acme <noreply@acme.example.com>"
    assert parsed["To"] == "Ada <ada@example.com>"
    assert parsed["Cc"] == "cc@example.com"
    assert parsed["Reply-To"] == "help@acme.example.com"
    assert parsed["Bcc"] is None
    assert parsed["Date"] is not None
    assert parsed["Message-ID"] == "<0b7f8e2a-4c1d-4e5f-9a6b-7c8d9e0f1a2b@acme.example.com>"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert outgoing.envelope_from == "noreply@acme.example.com"
    assert outgoing.envelope_recipients == [
        "ada@example.com",
        "cc@example.com",
        "hidden@example.com",
    ]
    assert b"hidden@example.com" not in outgoing.mime
