"""The MIME form of a message, the same bytes whichever provider carries it.

``build_mime`` writes the bytes directly: the stdlib ``EmailMessage`` costs
about 3.5 ms per message (header objects, policy lookups, a generator walk),
which capped the worker near 280 emails/s on its own. The fast builder covers
what Mailroom sends — a multipart/alternative of text and HTML, ASCII
addresses with any display name, any subject — and hands anything else
(an internationalised address, which needs SMTPUTF8) to the stdlib builder.
Its output is checked against the stdlib parser in tests/unit/test_mime.py.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from email.utils import format_datetime, formatdate, getaddresses

from mailroom.domain.model import Message, RenderedEmail

# RFC 5322: a line is at most 998 octets; 78 is what it recommends.
MAX_LINE = 998
FOLD_AT = 78
# An encoded word is at most 75 characters: "=?utf-8?b?" + base64 + "?=".
# 45 bytes of UTF-8 make 60 base64 characters, 72 in all.
_WORD_BYTES = 45
# Characters that force a display name into a quoted string (RFC 5322 specials).
_SPECIALS = frozenset('()<>[]:;@\\,."')


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """What a provider needs: the envelope and the finished MIME bytes."""

    message_id: str
    envelope_from: str
    envelope_recipients: list[str]
    mime: bytes


def message_id_header(message: Message) -> str:
    """Our own Message-ID: unique per message, so a retry carries the same one."""
    domain = _address_of(message.from_address).rpartition("@")[2] or "mailroom.local"
    return f"<{message.id}@{domain}>"


def build_mime(message: Message, rendered: RenderedEmail) -> OutgoingEmail:
    """The message's MIME bytes (CRLF line ends), built without the email package."""
    from_pair = _parse_one(message.from_address)
    to_pairs = [_parse_one(value) for value in message.to]
    cc_pairs = [_parse_one(value) for value in message.cc]
    reply_pairs = [_parse_one(value) for value in message.reply_to]
    everyone = (from_pair, *to_pairs, *cc_pairs, *reply_pairs)
    if not all(_fast_path_fits(name, address) for name, address in everyone):
        return build_mime_stdlib(message, rendered)
    domain = from_pair[1].rpartition("@")[2] or "mailroom.local"
    message_id = f"<{message.id}@{domain}>"
    date = format_datetime(message.created_at) if message.created_at else formatdate()
    text_encoding, text_body = _encode_body(rendered.text)
    html_encoding, html_body = _encode_body(rendered.html)
    boundary = _boundary(message.id.hex, text_body, html_body)

    lines = [
        _address_header("From", [from_pair]),
        _address_header("To", to_pairs),
    ]
    if cc_pairs:
        lines.append(_address_header("Cc", cc_pairs))
    if reply_pairs:
        lines.append(_address_header("Reply-To", reply_pairs))
    lines += [
        _unstructured_header("Subject", rendered.subject),
        f"Date: {date}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        f"Content-Transfer-Encoding: {text_encoding}",
        "",
    ]
    head = "\r\n".join(lines).encode("ascii")
    middle = (
        f"\r\n--{boundary}\r\n"
        'Content-Type: text/html; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {html_encoding}\r\n\r\n"
    ).encode("ascii")
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    return OutgoingEmail(
        message_id=message_id,
        envelope_from=from_pair[1],
        envelope_recipients=[_address_of(raw) for raw in message.envelope_recipients],
        mime=b"".join((head, b"\r\n", text_body, middle, html_body, tail)),
    )


def build_mime_stdlib(message: Message, rendered: RenderedEmail) -> OutgoingEmail:
    """The same message through the stdlib ``EmailMessage`` (slow, always right)."""
    # Imported here: only the rare fallback and the naive benchmark need them.
    from email.message import EmailMessage
    from email.policy import SMTP

    email = EmailMessage(policy=SMTP)
    email["From"] = message.from_address
    email["To"] = ", ".join(message.to)
    if message.cc:
        email["Cc"] = ", ".join(message.cc)
    if message.reply_to:
        email["Reply-To"] = ", ".join(message.reply_to)
    email["Subject"] = rendered.subject
    email["Date"] = (
        format_datetime(message.created_at) if message.created_at else formatdate(localtime=False)
    )
    email["Message-ID"] = message_id_header(message)
    email.set_content(rendered.text)
    email.add_alternative(rendered.html, subtype="html")
    return OutgoingEmail(
        message_id=email["Message-ID"],
        envelope_from=_address_of(message.from_address),
        envelope_recipients=[_address_of(raw) for raw in message.envelope_recipients],
        mime=email.as_bytes(),
    )


def _address_of(header_value: str) -> str:
    return _parse_one(header_value)[1]


# RFC 5322 atext, a dot-atom of it, and an addr-spec of two dot-atoms.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_ADDR_SPEC = rf"{_DOT_ATOM}@{_DOT_ATOM}"
_PLAIN_ADDRESS = re.compile(_ADDR_SPEC)
# ``Display Name <addr-spec>`` with a name of atext words one space apart:
# for these the stdlib parser's answer is the two parts as written.
_NAME_ADDR = re.compile(rf"\s*((?:{_ATEXT}(?: {_ATEXT})*)?)\s*<({_ADDR_SPEC})>\s*")


def is_plain_address(value: str) -> bool:
    """A bare dot-atom addr-spec: written as is between ``<>`` on the SMTP envelope."""
    return _PLAIN_ADDRESS.fullmatch(value) is not None


def _fast_path_fits(name: str, address: str) -> bool:
    # An internationalised address needs SMTPUTF8 handling, and a display name
    # that needs more than one encoded word is read back with a space between
    # the words by the stdlib parser (RFC 2047 says none): both are rare, so
    # the stdlib builder, whose output its parser reads back exactly, does them.
    if not address or not address.isascii():
        return False
    return not _needs_encoding(name) or len(name.encode("utf-8")) <= _WORD_BYTES


def _parse_one(header_value: str) -> tuple[str, str]:
    # A bare address and a plain ``Name <address>``, the common cases, need
    # no parser (the stdlib's costs ~0.15 ms per address, issue 8); the rest
    # (quoted names, comments, groups, obsolete forms) goes through it.
    if "<" not in header_value and '"' not in header_value and "(" not in header_value:
        stripped = header_value.strip()
        if " " not in stripped and "," not in stripped:
            return "", stripped
    plain = _NAME_ADDR.fullmatch(header_value)
    if plain is not None:
        return plain[1], plain[2]
    name, address = getaddresses([header_value])[0]
    return name.strip(), address


# --- headers -------------------------------------------------------------------


def _encoded_words(value: str) -> list[str]:
    """RFC 2047 base64 words of at most 45 UTF-8 bytes each, never splitting a character."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > _WORD_BYTES and chunk:
            words.append(_word("".join(chunk)))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk or not words:
        words.append(_word("".join(chunk)))
    return words


def _word(text: str) -> str:
    encoded = binascii.b2a_base64(text.encode("utf-8"), newline=False).decode("ascii")
    return f"=?utf-8?b?{encoded}?="


def _needs_encoding(value: str) -> bool:
    # "=?" in a plain header would be read back as an encoded word; control
    # characters and runs of spaces do not survive unfolding either.
    return (
        not value.isascii()
        or "=?" in value
        or not value.isprintable()
        or value != value.strip()
        or "  " in value
    )


def _unstructured_header(name: str, value: str) -> str:
    if not _needs_encoding(value) and len(name) + 2 + len(value) <= FOLD_AT:
        return f"{name}: {value}"
    if not value:
        return f"{name}: "
    # Folded between encoded words: the parser joins adjacent words without
    # the whitespace between them, so the value comes back exactly.
    return f"{name}: " + "\r\n ".join(_encoded_words(value))


def _display_name(name: str) -> list[str]:
    if _needs_encoding(name):
        return _encoded_words(name)
    if any(char in _SPECIALS for char in name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return [f'"{escaped}"']
    return [name]


def _address_header(name: str, pairs: list[tuple[str, str]]) -> str:
    line = f"{name}:"
    folded: list[str] = []
    for index, (display, address) in enumerate(pairs):
        tokens = [*_display_name(display), f"<{address}>"] if display else [address]
        if index < len(pairs) - 1:
            tokens[-1] += ","
        for token in tokens:
            if len(line) + 1 + len(token) > FOLD_AT and line.strip():
                folded.append(line)
                line = ""
            line += f" {token}"
    folded.append(line)
    return "\r\n".join(folded)


# --- bodies --------------------------------------------------------------------


def _encode_body(text: str) -> tuple[str, bytes]:
    """The body in canonical CRLF form and its transfer encoding.

    ASCII with short lines goes as 7bit; mostly-ASCII text (HTML with a few
    accented letters) as quoted-printable; the rest as base64, which is
    smaller for scripts that are all multi-byte.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    data = text.encode("utf-8")
    if data.isascii() and _lines_fit(data):
        return "7bit", data.replace(b"\n", b"\r\n")
    if (len(data) - len(text)) * 6 < len(data):
        # binascii's encoder is C. Input has LF line ends only, so its soft
        # breaks are LF too, and one replace makes every line end CRLF.
        encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
        return "quoted-printable", encoded.replace(b"\n", b"\r\n")
    crlf = data.replace(b"\n", b"\r\n")
    encoded = b"\r\n".join(
        binascii.b2a_base64(crlf[start : start + 57], newline=False)
        for start in range(0, len(crlf), 57)
    )
    return "base64", encoded + b"\r\n"


def _lines_fit(data: bytes) -> bool:
    if len(data) <= MAX_LINE:
        return True
    return max(map(len, data.split(b"\n"))) <= MAX_LINE


def _boundary(unique: str, *bodies: bytes) -> str:
    # The message id makes it unique without a call for randomness (which
    # showed in the worker's profile); a body containing it is checked for
    # anyway, and a counter then moves it on.
    attempt = 0
    while True:
        boundary = f"=_mr_{unique}_{attempt}"
        token = boundary.encode("ascii")
        if not any(token in body for body in bodies):
            return boundary
        attempt += 1
