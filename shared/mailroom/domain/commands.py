"""What callers ask Mailroom to do, validated before anything is written."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
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
from mailroom.domain.personalization import InlineContent
from mailroom.domain.queues import QUEUE_NAME_PATTERN
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


# Inline bodies: the API's request size limit bounds them first; this keeps
# one part of a batch item from taking all of it.
MAX_INLINE_BODY_CHARS = 512 * 1024
MAX_ITEM_KEY_LENGTH = 255


class TrackingRequest(BaseModel):
    """``tracking`` of a send: what to track, over the defaults (issue 21)."""

    model_config = ConfigDict(extra="forbid")

    opens: StrictBool | None = Field(default=None, description="Add a 1×1 pixel.")
    clicks: StrictBool | None = Field(
        default=None, description="Rewrite http(s) links in the HTML to redirects."
    )

    def as_pairs(self) -> tuple[tuple[str, bool], ...]:
        pairs = (("opens", self.opens), ("clicks", self.clicks))
        return tuple((key, flag) for key, flag in pairs if flag is not None)


class SendRequest(BaseModel):
    """Body of ``POST /v1/send``, and each item of ``POST /v1/send/batch``.

    Either ``template`` or inline content (``subject`` with ``html`` and/or
    ``text``, issue 17), never both.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    html: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_INLINE_BODY_CHARS,
        description=(
            "Inline HTML body, personalised from props: `{{ user.address.city }}`, "
            "`{{ items.0.sku }}`, `{{ name|'Customer' }}` (a default). Values are HTML-escaped."
        ),
    )
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_INLINE_BODY_CHARS,
        description="Inline plain-text body, personalised like html; values are not escaped.",
    )
    template: str | None = Field(
        default=None,
        validate_default=True,
        description=(
            "Name of the template to render: a file template or an uploaded one. "
            "Leave it out to send inline content (subject with html and/or text)."
        ),
        pattern=TEMPLATE_NAME_PATTERN,
        examples=["welcome"],
    )
    strict: StrictBool = Field(
        default=True,
        description=(
            "Inline content only. true: a prop the content prints without a value or "
            "default is 422 missing_prop. false: it renders empty and the answer lists it "
            "in render_warnings."
        ),
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ITEM_KEY_LENGTH,
        description=(
            "This message's own idempotency key (as the Idempotency-Key header of "
            "/v1/send): a batch resent after a partial failure accepts each item once."
        ),
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
        default_factory=dict,
        validation_alias=AliasChoices("props", "personalizations"),
        description="Values the template is rendered with; `personalizations` is another name.",
    )
    from_: Address | None = Field(
        default=None,
        alias="from",
        description="Sender, e.g. `Acme <noreply@acme.example.com>`; else the default.",
    )
    subject: str | None = Field(
        default=None,
        validate_default=True,
        max_length=998,
        description=(
            "Overrides the template's subject; with inline content, the subject, "
            "personalised like html (line breaks in values become spaces)."
        ),
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
    smtp_config: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description=(
            "One of the client's SMTP configurations (its id or name) to send through; "
            "422 `unknown_smtp_config` if the client has no active one of that name. "
            "Without it, the client's default configuration if any, else the provider chain."
        ),
    )

    tracking: TrackingRequest | None = Field(
        default=None,
        description=(
            "Open and click tracking for this message, over the defaults (off for "
            "transactional mail): each key given overrides, both ways. Needs "
            "TRACKING_BASE_URL or PUBLIC_BASE_URL; links in the HTML part only."
        ),
        examples=[{"opens": True, "clicks": True}],
    )
    queue: str | None = Field(
        default=None,
        pattern=QUEUE_NAME_PATTERN,
        description=(
            "The client's queue (see /v1/queues) to send through; the `default` queue when "
            "omitted. Unknown: 422 unknown_queue; draining: 409 queue_draining; paused: "
            "accepted with status `held`, sent after its resume."
        ),
    )

    @field_validator("headers")
    @classmethod
    def _validate_headers(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            validate_caller_headers(value)
        except MailroomError as error:
            raise PydanticCustomError(error.code, error.message) from error
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_name_for_props(cls, value: Any) -> Any:
        if isinstance(value, dict) and "props" in value and "personalizations" in value:
            raise PydanticCustomError(
                "validation_error", "give props or personalizations, not both"
            )
        return value

    @field_validator("idempotency_key")
    @classmethod
    def _validate_item_key(cls, value: str | None) -> str | None:
        if value is not None and not (value.isprintable() and value.isascii()):
            raise PydanticCustomError(
                "value_error", "idempotency_key is printable ASCII characters"
            )
        return value

    # Field validators rather than one check of the whole model, so that each
    # refusal names its field (``template``, ``subject``): html and text are
    # declared before template, template before subject, so each sees those.
    @field_validator("template")
    @classmethod
    def _template_or_inline(cls, value: str | None, info: ValidationInfo) -> str | None:
        inline = info.data.get("html") is not None or info.data.get("text") is not None
        if value is not None and inline:
            raise PydanticCustomError(
                "validation_error", "give a template or inline content (html, text), not both"
            )
        if value is None and not inline and not ({"html", "text"} - info.data.keys()):
            raise PydanticCustomError(
                "missing", "give a template, or inline content: subject with html and/or text"
            )
        return value

    @field_validator("template_version", "strict")
    @classmethod
    def _for_its_kind(cls, value: Any, info: ValidationInfo) -> Any:
        template = info.data.get("template")
        if info.field_name == "template_version" and value is not None and template is None:
            raise PydanticCustomError("validation_error", "template_version needs a template")
        if info.field_name == "strict" and value is False and template is not None:
            raise PydanticCustomError("validation_error", "strict applies to inline content only")
        return value

    @property
    def inline_content(self) -> InlineContent | None:
        """The inline content, if the request carries it instead of a template."""
        if self.template is not None:
            return None
        return InlineContent(subject=self.subject or "", html=self.html, text=self.text)

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
    def _validate_subject(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            inline = info.data.get("html") is not None or info.data.get("text") is not None
            if inline and info.data.get("template") is None:
                raise PydanticCustomError("missing", "inline content needs a subject")
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
