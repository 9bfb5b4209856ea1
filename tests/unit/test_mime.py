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


# --- folding and international addresses (issue 14) ------------------------------------------


def _header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def _assert_folded(raw: bytes) -> None:
    """Every header line is at most 998 octets, and at most 78 unless it cannot be folded.

    A line cannot be folded when it holds one token: nothing but a header's
    name, or a continuation, before a single unbreakable word (a long
    address, a Message-ID). The 998 limit is in octets (RFC 6532 3.4); the
    78 one in characters, as RFC 5322 words it (UTF-8 headers have more
    octets than characters).
    """
    for raw_line in _header_lines(raw):
        assert len(raw_line) <= 998, raw_line
        line = raw_line.decode("utf-8")
        if len(line) <= 78:
            continue
        body = line.strip() if line[:1] in (" ", "\t") else line.partition(":")[2].strip()
        assert " " not in body, f"a foldable header line of {len(line)} characters: {line!r}"


_words = st.lists(
    st.one_of(
        st.text(alphabet="abcdefghij", min_size=1, max_size=12),
        st.text(alphabet="äöüßé漢字", min_size=1, max_size=6),
        st.text(alphabet="abc", min_size=70, max_size=90),  # a word too long for one line
    ),
    max_size=40,
).map(" ".join)
_display = st.lists(
    st.one_of(st.text(alphabet="abcdefgh", min_size=1, max_size=10), st.just("Zoë")),
    max_size=12,
).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(
    subject=_words,
    names=st.lists(_display, min_size=1, max_size=12),
    idn=st.booleans(),
)
def test_every_header_line_is_folded_at_78_where_it_can_be_and_never_passes_998(
    subject: str, names: list[str], idn: bool
) -> None:
    # GIVEN any subject (short and long words, ASCII or not) and up to 12
    # recipients with display names, at ASCII or IDN domains
    domain = "bücher.example" if idn else "example.com"
    to = [
        f"{name} <user{n}@{domain}>" if name else f"user{n}@{domain}"
        for n, name in enumerate(names)
    ]
    message = _message(to=to, cc=to[:2])
    rendered = RenderedEmail(subject, "<p>x</p>", "x\n")
    # WHEN either builder writes it (and, for IDN mail, both of its forms)
    for outgoing in (build_mime(message, rendered), build_mime_stdlib(message, rendered)):
        forms = [outgoing.mime] + ([outgoing.mime_utf8] if outgoing.mime_utf8 else [])
        for raw in forms:
            # THEN no header line is longer than it must be
            _assert_folded(raw)
            # AND the subject reads back whole
            parsed = email.message_from_bytes(raw, policy=policy.default)
            assert parsed["Subject"] == subject


def test_a_long_plain_subject_is_folded_at_spaces_and_stays_readable() -> None:
    subject = "Your order of the blue teapot and four matching cups has been shipped today"
    outgoing = build_mime(_message(), RenderedEmail(subject + " by courier", "<p>x</p>", "x\n"))
    lines = _header_lines(outgoing.mime)
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Subject:"))
    # Folded before a space, not turned into encoded words
    assert lines[start + 1].startswith(b" ")
    assert b"=?" not in lines[start] + lines[start + 1]
    assert _parse(outgoing)["Subject"] == subject + " by courier"


def test_an_idn_address_has_an_ascii_form_and_a_utf8_form() -> None:
    # GIVEN a recipient at an IDN domain, with a non-ASCII display name
    message = _message(to=["Zoë <zoe@bücher.example>"], bcc=["ben@bücher.example"])
    outgoing = build_mime(message, RenderedEmail("Hi", "<p>x</p>", "x\n"))
    # THEN the envelope carries A-labels, Bcc included
    assert outgoing.envelope_recipients == [
        "zoe@xn--bcher-kva.example",
        "ben@xn--bcher-kva.example",
    ]
    assert not outgoing.requires_smtputf8
    # AND the ASCII form reads back with the A-label domain and the name decoded once
    (address,) = _parse(outgoing)["To"].addresses
    assert (address.display_name, address.addr_spec) == ("Zoë", "zoe@xn--bcher-kva.example")
    assert outgoing.mime.isascii()
    # AND the UTF-8 form has the header as written
    assert outgoing.mime_utf8 is not None
    assert b"To: Zo\xc3\xab <zoe@b\xc3\xbccher.example>\r\n" in outgoing.mime_utf8


def test_a_utf8_local_part_has_no_ascii_form() -> None:
    outgoing = build_mime(_message(to=["zoë@example.com"]), RenderedEmail("Hi", "<p>x</p>", "x\n"))
    assert outgoing.requires_smtputf8
    assert outgoing.mime == outgoing.mime_utf8
    assert outgoing.envelope_recipients == ["zoë@example.com"]


def test_a_display_name_stored_encoded_by_an_earlier_version_is_encoded_once() -> None:
    # GIVEN a row from before issue 14, whose name formataddr had encoded
    message = _message(to=[formataddr(("Zoë Ångström", "zoe@example.com"))])
    # WHEN it is built
    parsed = _parse(build_mime(message, RenderedEmail("Hi", "<p>x</p>", "x\n")))
    # THEN the recipient reads the name, not its encoding
    assert parsed["To"].addresses[0].display_name == "Zoë Ångström"
