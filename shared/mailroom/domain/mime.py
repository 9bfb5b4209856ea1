"""The MIME form of a message, the same bytes whichever provider carries it.

``build_mime`` writes the bytes directly: the stdlib ``EmailMessage`` costs
about 3.5 ms per message (header objects, policy lookups, a generator walk),
which capped the worker near 280 emails/s on its own. The fast builder covers
what Mailroom sends — a multipart/alternative of text and HTML, ASCII
addresses with any short display name, any subject — and hands anything else
(an internationalised address, a long display name) to the stdlib builder.
Its output is checked against the stdlib parser in tests/unit/test_mime.py.

International mail (issue 14) takes the stdlib builder only, so ASCII mail
pays nothing for it. Domains go out as IDNA A-labels (punycode); display
names are stored unencoded and encoded here, once. A message with a
non-ASCII address gets two forms: RFC 5322 with encoded words and A-labels
(``mime``), for carriers without SMTPUTF8, and RFC 6532 with UTF-8 headers
as written (``mime_utf8``), for those with it. A non-ASCII local part has no
ASCII form at all: ``requires_smtputf8`` says so and ``mime`` is the UTF-8 form.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import format_datetime, formatdate, getaddresses
from uuid import UUID

from mailroom.domain.model import Message, RenderedEmail

# RFC 5322: a line is at most 998 octets; 78 is what it recommends.
MAX_LINE = 998
FOLD_AT = 78
# An encoded word is at most 75 characters: "=?utf-8?b?" + base64 + "?=".
# 45 bytes of UTF-8 make 60 base64 characters, 72 in all.
_WORD_BYTES = 45
# Characters that force a display name into a quoted string (RFC 5322 specials).
_SPECIALS = frozenset('()<>[]:;@\\,."')


# A subject is one header field: RFC 5322's line limit bounds it once encoded.
MAX_SUBJECT_OCTETS = 998
# An ASCII subject this short is under the bound however it is encoded (45
# bytes become a 72-octet encoded word plus a space): no need to measure it.
SUBJECT_SURELY_FITS = 600
# A plain display name longer than this may need folding inside itself: the
# stdlib builder does that (rare: names are a few words).
_FAST_NAME_CHARS = 60


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """What a provider needs: the envelope and the finished MIME bytes.

    Envelope addresses carry IDNA A-label domains. ``mime`` is RFC 5322 in
    ASCII, except when ``requires_smtputf8`` (a non-ASCII local part), where
    it is the RFC 6532 form. ``mime_utf8`` is the RFC 6532 form of a message
    with any non-ASCII address, for a carrier that offers SMTPUTF8.
    """

    message_id: str
    envelope_from: str
    envelope_recipients: list[str]
    mime: bytes
    mime_utf8: bytes | None = None
    requires_smtputf8: bool = False
    # The VERP return path (issue 16): the SMTP provider's MAIL FROM when
    # set; ``envelope_from`` (the From address) otherwise and for the HTTP
    # providers, which run their own bounce handling.
    return_path: str | None = None
    # Whose message this is: DKIM signs only with a key of this client's own
    # sending domain (None: no client's key at all).
    client_id: UUID | None = None

    @property
    def mail_from(self) -> str:
        return self.return_path or self.envelope_from


def message_id_header(message: Message) -> str:
    """Our own Message-ID: unique per message, so a retry carries the same one."""
    domain = _address_of(message.from_address).rpartition("@")[2] or "mailroom.local"
    return f"<{message.id}@{a_label_domain(domain)}>"


def subject_octets(subject: str) -> int:
    """The subject's size once encoded for the header, as the builders write it."""
    if not _needs_encoding(subject):
        return len(subject)
    return len(" ".join(_encoded_words(subject)))


def subject_fits(subject: str) -> bool:
    """Whether the subject is within ``MAX_SUBJECT_OCTETS`` once encoded.

    Cheap for the common case (a short ASCII subject): two checks, no encoding.
    """
    if len(subject) <= SUBJECT_SURELY_FITS and subject.isascii():
        return True
    return subject_octets(subject) <= MAX_SUBJECT_OCTETS


def from_domain(message: Message) -> str:
    """The From address's domain, as written (Unicode for an IDN)."""
    return _address_of(message.from_address).rpartition("@")[2].lower()


def build_mime(
    message: Message,
    rendered: RenderedEmail,
    extra_headers: Sequence[tuple[str, str]] = (),
    return_path: str | None = None,
) -> OutgoingEmail:
    """The message's MIME bytes (CRLF line ends), built without the email package.

    ``extra_headers`` (validated caller headers, list headers, Feedback-ID)
    follow Message-ID; ``return_path`` becomes the SMTP envelope sender.
    """
    from_pair = _parse_one(message.from_address)
    to_pairs = [_parse_one(value) for value in message.to]
    cc_pairs = [_parse_one(value) for value in message.cc]
    reply_pairs = [_parse_one(value) for value in message.reply_to]
    everyone = (from_pair, *to_pairs, *cc_pairs, *reply_pairs)
    if not all(_fast_path_fits(name, address) for name, address in everyone) or not all(
        map(str.isascii, message.bcc)
    ):
        return build_mime_stdlib(message, rendered, extra_headers, return_path)
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
        *(_extra_header(name, value) for name, value in extra_headers),
        "MIME-Version: 1.0",
        # Folded before the parameter: on one line it passes 78 characters.
        "Content-Type: multipart/alternative;",
        f' boundary="{boundary}"',
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
        return_path=return_path,
        client_id=message.client_id,
    )


def build_mime_stdlib(
    message: Message,
    rendered: RenderedEmail,
    extra_headers: Sequence[tuple[str, str]] = (),
    return_path: str | None = None,
) -> OutgoingEmail:
    """The same message through the stdlib ``EmailMessage`` (slow, always right).

    Also the international path: see the module's docstring for the forms.
    """
    from_pair = _parse_one(message.from_address)
    groups = [
        ("From", [from_pair]),
        ("To", [_parse_one(value) for value in message.to]),
        ("Cc", [_parse_one(value) for value in message.cc]),
        ("Reply-To", [_parse_one(value) for value in message.reply_to]),
    ]
    envelope_from = a_label_address(from_pair[1])
    recipients = [a_label_address(_address_of(raw)) for raw in message.envelope_recipients]
    in_headers = [a_label_address(address) for _, pairs in groups for _, address in pairs]
    requires_smtputf8 = not all(map(str.isascii, [envelope_from, *recipients, *in_headers]))
    international = requires_smtputf8 or not all(
        address.isascii() for _, pairs in groups for _, address in pairs
    )
    utf8 = (
        _stdlib_bytes(message, rendered, groups, extra_headers, utf8=True)
        if international
        else None
    )
    mime = utf8 if requires_smtputf8 and utf8 is not None else None
    if mime is None:
        mime = _stdlib_bytes(message, rendered, groups, extra_headers, utf8=False)
    return OutgoingEmail(
        message_id=message_id_header(message),
        envelope_from=envelope_from,
        envelope_recipients=recipients,
        mime=mime,
        mime_utf8=utf8,
        requires_smtputf8=requires_smtputf8,
        return_path=a_label_address(return_path) if return_path else None,
        client_id=message.client_id,
    )


def _stdlib_bytes(
    message: Message,
    rendered: RenderedEmail,
    groups: list[tuple[str, list[tuple[str, str]]]],
    extra_headers: Sequence[tuple[str, str]] = (),
    *,
    utf8: bool,
) -> bytes:
    # Imported here: only the rare fallback and the naive benchmark need them.
    from email.headerregistry import Address
    from email.message import EmailMessage
    from email.policy import SMTP, SMTPUTF8

    # The ASCII form is 7-bit throughout, bodies too (quoted-printable or
    # base64): a relay that offers no SMTPUTF8 may offer no 8BITMIME either.
    # One under 78: the stdlib's folder lets the comma after an address in
    # a list run one character past its limit.
    fold = FOLD_AT - 1
    email = EmailMessage(
        policy=SMTPUTF8.clone(max_line_length=fold)
        if utf8
        else SMTP.clone(cte_type="7bit", max_line_length=fold)
    )
    for header, pairs in groups:
        if not pairs:
            continue
        addresses = []
        for name, address in pairs:
            local, _, domain = address.rpartition("@")
            addresses.append(
                Address(
                    display_name=name,
                    username=local,
                    # RFC 6532 headers keep the domain as written; RFC 5322
                    # ones need it in ASCII.
                    domain=domain if utf8 else a_label_domain(domain),
                )
            )
        email[header] = addresses
    email["Date"] = (
        format_datetime(message.created_at) if message.created_at else formatdate(localtime=False)
    )
    email["Message-ID"] = message_id_header(message)
    email.set_content(rendered.text)
    email.add_alternative(rendered.html, subtype="html")
    # The subject is written as the fast builder writes it: the stdlib folds
    # a long first word onto a line of its own, and its parser then reads
    # the subject back with a leading space.
    # Extra headers are written as the fast builder writes them too: the
    # stdlib folder would turn a long List-Unsubscribe URL into encoded
    # words, which a structured header may not hold.
    extra = b"".join(
        _extra_header(name, value).encode("ascii") + b"\r\n" for name, value in extra_headers
    )
    return _subject_line(rendered.subject, utf8=utf8) + b"\r\n" + extra + email.as_bytes()


def _subject_line(subject: str, *, utf8: bool) -> bytes:
    plain_utf8 = (
        subject.isprintable()
        and "=?" not in subject
        and subject == subject.strip()
        and "  " not in subject
    )
    if utf8 and plain_utf8 and not subject.isascii():
        # RFC 6532: UTF-8 as is, folded at spaces where it is long.
        if len(subject.encode("utf-8")) + 9 <= FOLD_AT:
            return f"Subject: {subject}".encode()
        folded = _folded_at_spaces("Subject", subject)
        if folded is not None:
            return folded.encode()
    return _unstructured_header("Subject", subject).encode("ascii")


def a_label_domain(domain: str) -> str:
    """An IDN domain as IDNA A-labels (``bücher.example`` → ``xn--bcher-kva.example``).

    One that IDNA cannot encode stays as written: only an SMTPUTF8 carrier
    can then take it, and the others refuse the message as permanent.
    """
    if domain.isascii():
        return domain
    import idna  # email-validator's own dependency: the same IDNA 2008 rules

    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain


def a_label_address(address: str) -> str:
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{a_label_domain(domain)}" if at else address


def _legacy_decoded(name: str) -> str:
    """A display name stored encoded by an earlier version (``=?utf-8?b?...?=``), decoded.

    Until issue 14 the send API stored names RFC 2047-encoded, and the
    builder encoded them again; a message queued then is still sent right.
    """
    if not (name.startswith("=?") and name.endswith("?=")):
        return name
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(name)))
    except (ValueError, LookupError):
        return name


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
    if len(name) > _FAST_NAME_CHARS:
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
        if "=?" in plain[1]:
            # Unquoted: only a row stored before issue 14 holds one (names
            # with a literal "=?" are stored quoted now).
            return _legacy_decoded(plain[1]), plain[2]
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
    if not _needs_encoding(value):
        if len(name) + 2 + len(value) <= FOLD_AT:
            return f"{name}: {value}"
        folded = _folded_at_spaces(name, value)
        if folded is not None:
            return folded
    if not value:
        return f"{name}: "
    # Folded between encoded words: the parser joins adjacent words without
    # the whitespace between them, so the value comes back exactly.
    return f"{name}: " + "\r\n ".join(_encoded_words(value))


def _extra_header(name: str, value: str) -> str:
    """A header added beside the content: plain ASCII as written, folded at spaces.

    A value with a word longer than a folded line (a List-Unsubscribe URL)
    stays on one line: RFC 5322 allows 998 octets, and encoded words, which
    ``_unstructured_header`` would use, are not allowed in structured headers.
    """
    if _needs_encoding(value) or len(name) + 2 + len(value) > MAX_LINE:
        return _unstructured_header(name, value)
    if len(name) + 2 + len(value) <= FOLD_AT:
        return f"{name}: {value}"
    folded = _folded_at_spaces(name, value, limit=MAX_LINE)
    return folded if folded is not None else f"{name}: {value}"


def _folded_at_spaces(name: str, value: str, limit: int = FOLD_AT) -> str | None:
    """A long plain header folded before spaces (RFC 5322 2.2.3), or None.

    Unfolding removes only the CRLFs, so the value reads back as it was.
    The first word stays beside the name (a fold right after the colon reads
    back as a leading space). None if some line would still pass 78
    characters (a long URL in a subject): encoded words can split it instead.
    """
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}: {words[0]}"
    for word in words[1:]:
        if len(current) + 1 + len(word) > FOLD_AT:
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    if any(len(part) > limit for part in lines):
        return None
    return "\r\n".join(lines)


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
