"""Email addresses and header values, validated before they reach a mail header."""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import formataddr, getaddresses

from mailroom.domain.errors import HeaderInjection, InvalidRequest

_LINE_BREAKS = frozenset("\r\n\u2028\u2029\x85\x0b\x0c")
_REFUSED_IN_HEADERS = _LINE_BREAKS | {"\x00"}


def reject_line_breaks(field: str, value: str) -> str:
    """Refuse a header value that could start a new header (CRLF injection).

    A NUL is refused too and named as what it is: it ends a C string, so a
    relay may cut the header there, but it is not a line break.
    """
    if not any(char in _REFUSED_IN_HEADERS for char in value):
        return value
    if not any(char in _LINE_BREAKS for char in value):
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


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An address with an optional display name, e.g. ``Ada <ada@example.com>``."""

    address: str
    display_name: str = ""

    @classmethod
    def parse(cls, field: str, raw: str) -> Mailbox:
        reject_line_breaks(field, raw)
        parsed = getaddresses([raw])
        if len(parsed) != 1 or not parsed[0][1]:
            raise _invalid(field, raw, "expected exactly one email address")
        display_name, address = parsed[0]
        # Imported on first use (~25-60 ms): the functions that only read
        # messages or take webhooks never parse an address (issue 8).
        from email_validator import EmailNotValidError, validate_email

        try:
            # Deliverability (DNS) is not checked here: the API must answer
            # without network calls, and bounces report dead domains anyway.
            checked = validate_email(address, check_deliverability=False)
        except EmailNotValidError as error:
            raise _invalid(field, raw, str(error)) from error
        return cls(address=checked.normalized, display_name=display_name.strip())

    def header_value(self) -> str:
        return formataddr((self.display_name, self.address)) if self.display_name else self.address

    def as_header_address(self) -> Address:
        local, _, domain = self.address.rpartition("@")
        return Address(display_name=self.display_name, username=local, domain=domain)

    def __str__(self) -> str:
        return self.header_value()


def _invalid(field: str, raw: str, reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"{field} is not a valid email address: {reason}",
        details=[{"field": field, "message": reason, "value": raw[:320]}],
    )
