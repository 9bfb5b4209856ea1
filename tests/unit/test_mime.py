"""The fast MIME builder, read back by the stdlib parser: headers, structure, bodies, limits."""

from __future__ import annotations

import email
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, getaddresses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mailroom.domain.mime import OutgoingEmail, build_mime, build_mime_stdlib, is_plain_address
from mailroom.domain.model import Message, RenderedEmail


def _message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "id": uuid.UUID("0b7f8e2a-4c1d-4e5f-9a6b-7c8d9e0f1a2b"),
        "client_id": uuid.uuid4(),
        "trace_id": "t1",
        "template_name": "welcome",
        "from_address": "Acme <noreply@acme.example.com>",
        "to": ["Ada <ada@example.com>"],
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "created_at": datetime(2026, 11, 23, 6, 45, tzinfo=UTC),
    }
    fields.update(overrides)
    return Message(**fields)


def _parse(outgoing: OutgoingEmail) -> EmailMessage:
    parsed = email.message_from_bytes(outgoing.mime, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _body(parsed: EmailMessage, subtype: str) -> str:
    part = parsed.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def _assert_wire_shape(raw: bytes) -> None:
    # Every line ends CRLF (no bare CR or LF) and none is longer than 998 octets.
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert max(len(line) for line in lines) <= 998


def test_headers_structure_and_bodies_read_back_as_written() -> None:
    # GIVEN a message with Cc, Bcc, Reply-To, accented names and a non-ASCII subject
    message = _message(
        from_address="Acme Café <noreply@acme.example.com>",
        to=["Ada Lovelace <ada@example.com>", "bob@example.com"],
        cc=['"Lovelace, Ada" <ada2@example.com>'],
        bcc=["hidden@example.com"],
        reply_to=["help@acme.example.com"],
    )
    rendered = RenderedEmail(
        subject="Grüße, Ada — your receipt",
        html="<p style='color:red'>Total 12 €</p>",
        text="Hello Ada\nline two é\n",
    )
    # WHEN the fast builder writes it and the stdlib parser reads it back
    outgoing = build_mime(message, rendered)
    parsed = _parse(outgoing)
    # THEN every header, both parts and both bodies are what was asked for
    assert parsed["Subject"] == "Grüße, Ada — your receipt"
    assert parsed["From"].addresses[0].display_name == "Acme Café"
    assert parsed["From"].addresses[0].addr_spec == "noreply@acme.example.com"
    assert [a.addr_spec for a in parsed["To"].addresses] == ["ada@example.com", "bob@example.com"]
    assert parsed["Cc"].addresses[0].display_name == "Lovelace, Ada"
    assert parsed["Reply-To"] == "help@acme.example.com"
    assert parsed["Bcc"] is None
    assert b"hidden@example.com" not in outgoing.mime
    assert parsed["Message-ID"] == "<0b7f8e2a-4c1d-4e5f-9a6b-7c8d9e0f1a2b@acme.example.com>"
    assert parsed["Date"].datetime == datetime(2026, 11, 23, 6, 45, tzinfo=UTC)
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert _body(parsed, "plain") == "Hello Ada\nline two é\n"
    assert _body(parsed, "html") == "<p style='color:red'>Total 12 €</p>\n"
    assert parsed.defects == []
    assert all(part.defects == [] for part in parsed.iter_parts())
    assert outgoing.envelope_from == "noreply@acme.example.com"
    assert outgoing.envelope_recipients == [
        "ada@example.com",
        "bob@example.com",
        "ada2@example.com",
        "hidden@example.com",
    ]
    _assert_wire_shape(outgoing.mime)


def test_transfer_encoding_follows_the_content() -> None:
    # GIVEN an ASCII text, a mostly-ASCII HTML part, and an all-Cyrillic text
    ascii_only = build_mime(_message(), RenderedEmail("Hi", "<p>café</p>", "Hi\n"))
    cyrillic = build_mime(_message(), RenderedEmail("Hi", "<p>x</p>", "Привет, мир! " * 40))
    # WHEN they are parsed
    first, second = _parse(ascii_only), _parse(cyrillic)
    # THEN 7bit, quoted-printable and base64 were chosen, and each decodes back
    encodings = [part["Content-Transfer-Encoding"] for part in first.iter_parts()]
    assert encodings == ["7bit", "quoted-printable"]
    plain = second.get_body(("plain",))
    assert plain is not None
    assert plain["Content-Transfer-Encoding"] == "base64"
    assert _body(second, "plain") == "Привет, мир! " * 40 + "\n"


def test_long_lines_and_long_headers_stay_within_998_octets() -> None:
    # GIVEN a 5000-character single-line HTML part, a 300-character subject and 40 recipients
    html = "<td>" + "x" * 5000 + "</td>"
    subject = "A long subject " * 20
    recipients = [f"Person {n} <person{n}@example.com>" for n in range(40)]
    # WHEN the message is built
    outgoing = build_mime(_message(to=recipients), RenderedEmail(subject, html, "t\n"))
    parsed = _parse(outgoing)
    # THEN no line passes 998 octets and everything reads back whole
    _assert_wire_shape(outgoing.mime)
    assert parsed["Subject"] == subject
    assert [a.addr_spec for a in parsed["To"].addresses] == [
        f"person{n}@example.com" for n in range(40)
    ]
    assert _body(parsed, "html") == html + "\n"


def test_text_that_looks_like_an_encoded_word_is_not_decoded() -> None:
    # GIVEN a subject and display name holding "=?utf-8?q?" literally
    message = _message(to=['"=?utf-8?q?Boss?=" <ada@example.com>'])
    rendered = RenderedEmail("=?utf-8?q?hi?= there", "<p>x</p>", "x\n")
    # WHEN it is built and parsed
    parsed = _parse(build_mime(message, rendered))
    # THEN the literal text survives rather than being read as encoded words
    assert parsed["Subject"] == "=?utf-8?q?hi?= there"
    assert parsed["To"].addresses[0].display_name == "=?utf-8?q?Boss?="


def test_internationalised_address_goes_through_the_stdlib_builder() -> None:
    # GIVEN a recipient whose address itself is not ASCII
    message = _message(to=["josé@example.com"])
    # WHEN it is built
    outgoing = build_mime(message, RenderedEmail("Hi", "<p>x</p>", "x\n"))
    # THEN the output is the stdlib builder's (same headers and parts)
    reference = build_mime_stdlib(message, RenderedEmail("Hi", "<p>x</p>", "x\n"))
    assert _parse(outgoing)["To"] == _parse(reference)["To"]
    assert outgoing.envelope_recipients == ["josé@example.com"]


def test_carriage_returns_in_bodies_become_crlf() -> None:
    # GIVEN a text part with CR, LF and CRLF line ends and no final newline
    outgoing = build_mime(_message(), RenderedEmail("Hi", "<p>a</p>", "one\rtwo\r\nthree\nfour"))
    # WHEN it is parsed
    parsed = _parse(outgoing)
    # THEN every line end is CRLF on the wire and the lines read back in order
    _assert_wire_shape(outgoing.mime)
    assert _body(parsed, "plain") == "one\ntwo\nthree\nfour\n"


_names = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=60
).map(lambda s: " ".join(s.split()))
_bodies = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=1500)


@settings(max_examples=100, deadline=None)
@given(subject=_names, name=_names, text=_bodies, html=_bodies)
def test_any_subject_name_and_body_round_trips(
    subject: str, name: str, text: str, html: str
) -> None:
    # GIVEN any single-line subject and display name and any bodies
    message = _message(to=[f'"{_quote(name)}" <ada@example.com>'] if name else ["ada@example.com"])
    # WHEN the fast builder writes them and the stdlib parser reads them back
    outgoing = build_mime(message, RenderedEmail(subject, html, text))
    parsed = _parse(outgoing)
    # THEN the wire shape holds and every value comes back unchanged; a display
    # name reads back as the stdlib builder's does (its parser puts a space
    # between the encoded words of a long non-ASCII name, so those go the
    # stdlib way and must at least match it)
    _assert_wire_shape(outgoing.mime)
    assert parsed["Subject"] == subject
    reference = _parse(build_mime_stdlib(message, RenderedEmail(subject, html, text)))
    assert parsed["To"].addresses[0].display_name == reference["To"].addresses[0].display_name
    if len(name.encode("utf-8")) <= 45:
        assert parsed["To"].addresses[0].display_name == name
    assert parsed["To"].addresses[0].addr_spec == "ada@example.com"
    assert _body(parsed, "plain") == _canonical(text)
    assert _body(parsed, "html") == _canonical(html)


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _canonical(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def test_a_body_that_contains_the_boundary_gets_another_one() -> None:
    # GIVEN a text part that quotes the boundary the builder would pick first
    message = _message()
    first_choice = f"=_mr_{message.id.hex}_0"
    text = f"--{first_choice}\nnot a part\n"
    # WHEN the message is built
    parsed = _parse(build_mime(message, RenderedEmail("Hi", "<p>x</p>", text)))
    # THEN the structure is still two parts and the text reads back whole
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert _body(parsed, "plain") == text


_ADDRESS_FORMS = [
    "ada@example.com",
    "  ada@example.com ",
    "Ada <ada@example.com>",
    "Ada Lovelace <Ada.Lovelace@Example.com>",
    "<ada@example.com>",
    " Ada  Lovelace   <ada@example.com> ",
    '"Lovelace, Ada" <ada@example.com>',
    "J. Doe <j.doe@example.com>",
    "ada@example.com (Ada)",
    "Ada <ada@[127.0.0.1]>",
    "Ada <a..b@example.com>",
    "O'Brien+tag <o'brien+tag@example.com>",
]


@given(
    st.one_of(
        st.sampled_from(_ADDRESS_FORMS),
        # As the send API stores them: formataddr of what it validated.
        st.builds(
            lambda name, local, domain: formataddr((name, f"{local}@{domain}")),
            st.text(alphabet="ab .,'\"()-_", max_size=12),
            st.text(alphabet="ab.+-_'", min_size=1, max_size=10),
            st.sampled_from(["example.com", "x.example.org", "example..com"]),
        ),
    )
)
@settings(max_examples=300, deadline=None)
def test_envelope_addresses_are_what_the_stdlib_parser_reads(value: str) -> None:
    # The fast address reading (issue 8) must agree with email.utils.getaddresses.
    expected = getaddresses([value])[0][1]
    outgoing = build_mime(
        _message(to=[value], from_address=value), RenderedEmail("Hi", "<p>Hi</p>", "Hi\n")
    )
    assert outgoing.envelope_recipients == [expected]
    assert outgoing.envelope_from == expected


def test_a_plain_address_is_one_dot_atom_at_another() -> None:
    assert is_plain_address("ada.l+x@mail.example.com")
    for value in ("Ada <ada@example.com>", "a..b@example.com", "ada@", "a b@example.com", ""):
        assert not is_plain_address(value), value
