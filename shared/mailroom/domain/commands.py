"""What callers ask Mailroom to do, validated before anything is written."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mailroom.domain.addresses import Mailbox, reject_line_breaks
from mailroom.domain.errors import MailroomError
from mailroom.domain.outgoing_headers import (
    CALLER_HEADER_ALLOWLIST,
    CAMPAIGN_PATTERN,
    TAG_PATTERN,
    validate_caller_headers,
)
from mailroom.domain.templates import TEMPLATE_NAME_PATTERN as TEMPLATE_NAME_PATTERN
from mailroom.domain.templates import is_valid_template_name as is_valid_template_name


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _mailbox(raw: str) -> str:
    try:
        return Mailbox.parse("address", raw).header_value()
    except MailroomError as error:
        raise PydanticCustomError(error.code, error.message) from error


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
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra message headers: any `X-` header (but `X-Mailroom-*`) and "
            + ", ".join(f"`{name}`" for name in sorted(CALLER_HEADER_ALLOWLIST))
            + ". Headers Mailroom writes (From, To, Subject, Date, Message-ID, "
            "Return-Path, DKIM-Signature, List-Unsubscribe, Feedback-ID, Content-*...) "
            "are refused with 422 `header_not_allowed`; CR or LF with `header_injection`."
        ),
        examples=[{"X-Campaign-Week": "49"}],
    )
    tags: list[Annotated[str, Field(pattern=TAG_PATTERN)]] = Field(
        default_factory=list,
        max_length=10,
        description="Labels stored with the message and returned by the status API.",
    )
    bulk: bool = Field(
        default=False,
        description=(
            "Bulk or marketing mail: it carries RFC 8058 one-click unsubscribe "
            "(`List-Unsubscribe` and `List-Unsubscribe-Post`). Needs exactly one "
            "recipient (the link names who unsubscribes)."
        ),
    )
    campaign: str | None = Field(
        default=None,
        pattern=CAMPAIGN_PATTERN,
        description="The campaign part of the Feedback-ID header; the template name by default.",
    )
    unsubscribe_url: str | None = Field(
        default=None,
        max_length=500,
        pattern=r"^https://[!-~]+$",
        description="A bulk message's List-Unsubscribe points here instead of Mailroom's link.",
    )

    @field_validator("headers")
    @classmethod
    def _validate_headers(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            validate_caller_headers(value)
        except MailroomError as error:
            raise PydanticCustomError(error.code, error.message) from error
        return value

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
