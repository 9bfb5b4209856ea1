"""Email addresses and header values, validated before they reach a mail header."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import getaddresses

from mailroom.domain.errors import HeaderInjection, InvalidRequest

_LINE_BREAKS = frozenset("\r\n\u2028\u2029\x85\x0b\x0c")
_REFUSED_IN_HEADERS = _LINE_BREAKS | {"\x00"}
# A display name of RFC 5322 atoms (RFC 6532 adds non-ASCII characters to
# them) one space apart needs no quotes. "=?" is left out of it so that a
# literal one is quoted, never mistaken for an encoded word.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_PLAIN_PHRASE = re.compile(rf"{_ATOM}(?: {_ATOM})*")


def reject_line_breaks(field: str, value: str) -> str:
    """Refuse a header value that could start a new header (CRLF injection).

    A NUL is refused too and named as what it is: it ends a C string, so a
    relay may cut the header there, but it is not a line break.
    """
    # Set operations in C: a character-by-character generator was most of
    # this check's cost, paid once per address of a bulk batch (issue 17).
    if _REFUSED_IN_HEADERS.isdisjoint(value):
        return value
    if _LINE_BREAKS.isdisjoint(value):
        message = "NUL characters (\\u0000) are not allowed in header fields"
        raise HeaderInjection(
            f"{field} must not contain NUL characters",
            details=[{"field": field, "type": "nul_character", "message": message}],
        )
    raise HeaderInjection(
        f"{field} must not contain line breaks",
        details=[
            {
                "field": field,
                "message": "line breaks are not allowed in header fields",
            }
        ],
    )


# One @ between runs of characters getaddresses gives no meaning to.
BARE_ADDRESS = re.compile(r'[^\s<>()\[\],;:"\\@]+@[^\s<>()\[\],;:"\\@]+')


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An address with an optional display name, e.g. ``Ada <ada@example.com>``."""

    address: str
    display_name: str = ""

    @classmethod
    def parse(cls, field: str, raw: str) -> Mailbox:
        reject_line_breaks(field, raw)
        if BARE_ADDRESS.fullmatch(raw):
            # No display name, comment, quote, list or route can be in it:
            # getaddresses would answer ("", raw), at half the cost of the
            # whole check (a bulk batch checks a million of these, issue 17).
            display_name, address = "", raw
        else:
            parsed = getaddresses([raw])
            if len(parsed) != 1 or not parsed[0][1]:
                raise _invalid(field, raw, "expected exactly one email address")
            display_name, address = parsed[0]
        fast = _plain_address(address)
        if fast is not None:
            return cls(address=fast, display_name=display_name.strip())
        # Imported on first use (~25-60 ms): the functions that only read
        # messages or take webhooks never parse an address (issue 8).
        from email_validator import EmailNotValidError, validate_email

        try:
            # Deliverability (DNS) is not checked here: the API must answer
            # without network calls, and bounces report dead domains anyway.
            checked = validate_email(address, check_deliverability=False)
        except EmailNotValidError as error:
            sandboxed = _sandbox_address(address)
            if sandboxed is None:
                raise _invalid(field, raw, str(error)) from error
            return cls(address=sandboxed, display_name=display_name.strip())
        return cls(address=checked.normalized, display_name=display_name.strip())

    def header_value(self) -> str:
        """``Name <address>`` as written, unencoded: the MIME builder encodes it, once.

        Stored this way (issue 14): ``formataddr`` RFC 2047-encoded the name
        here and the builder encoded that again, so recipients read
        ``=?utf-8?b?PT91dGYt...``; it also raised on an IDN domain.
        """
        if not self.display_name:
            return self.address
        name = self.display_name
        if _PLAIN_PHRASE.fullmatch(name) is None or "=?" in name or not name.isprintable():
            escaped = name.replace("\\", "\\\\").replace('"', '\\"')
            name = f'"{escaped}"'
        return f"{name} <{self.address}>"

    def as_header_address(self) -> Address:
        local, _, domain = self.address.rpartition("@")
        return Address(display_name=self.display_name, username=local, domain=domain)

    def __str__(self) -> str:
        return self.header_value()


# RFC 5322 dot-atom local part in ASCII: email-validator accepts it as it is
# (its own DOT_ATOM_TEXT); anything else goes through email-validator whole.
_ASCII_LOCAL_PART = re.compile(
    r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*"
)
# Room below email-validator's length limits (64 before the @, 254 in all),
# so a fast-path answer never differs from its answer on length.
_FAST_LOCAL_MAX = 64
_FAST_ADDRESS_MAX = 254


def _plain_address(address: str) -> str | None:
    """email-validator's normalized form of a plain ASCII address, or None: ask it.

    The answer is what ``validate_email(address).normalized`` would be: the
    local part as given, the domain as email-validator normalizes it. Most
    of email-validator's time is the domain's check (UTS 46 character by
    character), and a bulk batch's million recipients share few domains
    (issue 17), so each domain is checked by email-validator once per process
    and remembered. Local parts it would change (RFC 2142 role names are
    lowercased), non-ASCII, IDN (xn--) and long addresses are not taken here.
    """
    if len(address) > _FAST_ADDRESS_MAX or not address.isascii():
        return None
    local, at, domain = address.rpartition("@")
    if (
        not at
        or len(local) > _FAST_LOCAL_MAX
        or _ASCII_LOCAL_PART.fullmatch(local) is None
        or "xn--" in domain.lower()
    ):
        return None
    from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        return None
    checked_domain = _checked_domain(domain)
    return None if checked_domain is None else f"{local}@{checked_domain}"


@functools.lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str | None:
    """The domain as email-validator normalizes it, or None if it refuses it."""
    from email_validator import EmailNotValidError, validate_email

    try:
        return str(validate_email(f"a@{domain}", check_deliverability=False).domain)
    except EmailNotValidError:
        return None


# Test mode's simulated recipients (domain/sandbox.py). email-validator
# refuses every special-use domain, .invalid included; this one is accepted
# here and refused for live callers by the send service, with the same words.
SANDBOX_DOMAIN = "sim.mailroom.invalid"
SPECIAL_USE_REFUSAL = (
    "The part after the @-sign is a special-use or reserved name that cannot be used with email."
)


def _sandbox_address(address: str) -> str | None:
    """``address`` normalised if it is at the sandbox domain and valid otherwise; else None."""
    local, at, domain = address.rpartition("@")
    if not at or domain.strip().lower() != SANDBOX_DOMAIN:
        return None
    from email_validator import EmailNotValidError, validate_email

    try:
        # The local part is checked as any other: against a stand-in domain.
        checked = validate_email(f"{local}@example.com", check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{checked.local_part}@{SANDBOX_DOMAIN}"


def _invalid(field: str, raw: str, reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"{field} is not a valid email address: {reason}",
        details=[{"field": field, "message": reason, "value": raw[:320]}],
    )
