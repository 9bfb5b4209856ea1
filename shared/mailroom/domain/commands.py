"""What callers ask Mailroom to do, validated before anything is written."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mailroom.domain.addresses import Mailbox, reject_line_breaks
from mailroom.domain.errors import MailroomError
from mailroom.domain.templates import TEMPLATE_NAME_PATTERN as TEMPLATE_NAME_PATTERN
from mailroom.domain.templates import is_valid_template_name as is_valid_template_name


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _mailbox(raw: str) -> str:
    try:
        return Mailbox.parse("address", raw).header_value()
    except MailroomError as error:
        raise PydanticCustomError(error.code, error.message) from error


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.(\d{1,9}))?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?"
)


# Times outside these are mistakes, and near the ends of the calendar an
# offset or a cron step overflows Python's datetime.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2999, 12, 31, tzinfo=UTC)


def _rfc3339(value: Any) -> datetime:
    """An RFC 3339 date-time string with its offset; a number or a naive time is refused.

    Pydantic's own datetime would take a Unix timestamp, or a time without an
    offset as UTC: a send scheduled in the wrong hour (issue 18).
    """
    if isinstance(value, datetime):
        moment = value
    else:
        match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise PydanticCustomError(
                "invalid_datetime", "an RFC 3339 date-time, e.g. 2026-12-24T09:00:00+01:00"
            )
        if match.group("offset") is None:
            raise PydanticCustomError(
                "naive_datetime",
                "a time zone offset is required (e.g. 2026-12-24T09:00:00+01:00 or ...Z)",
            )
        text = value[:-1] + "Z" if value.endswith("z") else value
        fraction = match.group(1)
        if fraction and len(fraction) > 6:
            # Python keeps microseconds: nanoseconds are cut, not rounded up.
            start, end = match.span(1)
            text = text[:start] + fraction[:6] + text[end:]
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as error:
            raise PydanticCustomError(
                "invalid_datetime", "not a real date and time: {error}", {"error": str(error)}
            ) from error
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PydanticCustomError("naive_datetime", "a time zone offset is required")
    try:
        in_utc = moment.astimezone(UTC)
    except OverflowError:
        in_utc = None
    if in_utc is None or not _EARLIEST <= in_utc <= _LATEST:
        raise PydanticCustomError(
            "datetime_out_of_range", "a time between 1970 and 2999 (UTC) is expected"
        )
    return moment


# An RFC 3339 date-time with an offset (issue 18), as a string in the schema.
OffsetDateTime = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

# Versions are PostgreSQL integers: a larger number could never name one, and
# PostgreSQL would refuse it with an error rather than find nothing.
MAX_VERSION = 2**31 - 1

# Validated item by item, so an error names its place: ``to.1``.
Address = Annotated[str, AfterValidator(_mailbox)]
# One address or a list of them; the JSON Schema says both, as accepted.
AddressList = Annotated[
    list[Address], BeforeValidator(_as_list, json_schema_input_type=str | list[str])
]
RecipientList = Annotated[
    list[Address],
    BeforeValidator(
        _as_list, json_schema_input_type=str | Annotated[list[str], Field(min_length=1)]
    ),
]


class SendRequest(BaseModel):
    """Body of ``POST /v1/send``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    template: str = Field(
        description="Name of the template to render: a file template or an uploaded one.",
        pattern=TEMPLATE_NAME_PATTERN,
        examples=["welcome"],
    )
    # Strict: JSON true is not version 1, nor "2" version 2.
    template_version: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="Pin an uploaded template's version; by default the newest renders.",
    )
    to: RecipientList = Field(
        min_length=1,
        description="One address, or a list of them.",
        examples=["ada@example.com"],
    )
    props: dict[str, Any] = Field(
        default_factory=dict, description="Values the template is rendered with."
    )
    from_: Address | None = Field(
        default=None,
        alias="from",
        description="Sender, e.g. `Acme <noreply@acme.example.com>`; else the default.",
    )
    subject: str | None = Field(
        default=None, max_length=998, description="Overrides the template's subject."
    )
    cc: AddressList = Field(default_factory=list)
    bcc: AddressList = Field(default_factory=list)
    reply_to: AddressList = Field(default_factory=list)
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        max_length=50,
        description="Opaque values stored with the message and returned by the status API.",
    )
    scheduled_at: OffsetDateTime | None = Field(
        default=None,
        description=(
            "Send at this time (RFC 3339 with an offset, at most 30 days ahead) instead of "
            "now. A time already past sends now, and the answer says so."
        ),
        examples=["2026-12-24T09:00:00+01:00"],
    )

    @field_validator("subject")
    @classmethod
    def _validate_subject(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return reject_line_breaks("subject", value)
        except MailroomError as error:
            raise PydanticCustomError(error.code, error.message) from error

    @field_validator("metadata")
    @classmethod
    def _validate_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not 1 <= len(key) <= 64:
                raise PydanticCustomError("value_error", "metadata keys are 1 to 64 characters")
            if isinstance(item, str) and len(item) > 1000:
                raise PydanticCustomError(
                    "value_error", "metadata values are at most 1000 characters"
                )
        return value

    @model_validator(mode="after")
    def _each_recipient_once(self) -> Self:
        # Issue 14: an address named twice (in one list, or across to, cc and
        # bcc) is sent once, so the envelope and the recipient rows hold it
        # once. The first occurrence keeps it, in the order to, cc, bcc: a
        # visible header beats a hidden copy. Addresses compare as the
        # suppression list keys them (recipient rows too): whole address,
        # case-insensitively; the domain is already normalised (IDN to
        # Unicode, lowercase) by the address validator.
        if len(self.to) + len(self.cc) + len(self.bcc) > 1:
            seen: set[str] = set()
            self.to = _first_occurrences(self.to, seen)
            self.cc = _first_occurrences(self.cc, seen)
            self.bcc = _first_occurrences(self.bcc, seen)
        return self

    @property
    def recipient_count(self) -> int:
        return len(self.to) + len(self.cc) + len(self.bcc)


def _first_occurrences(values: list[str], seen: set[str]) -> list[str]:
    kept = []
    for value in values:
        # ``value`` is Mailbox.header_value(): the address alone, or last in <>.
        key = (value[value.rindex("<") + 1 : -1] if value.endswith(">") else value).lower()
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept
