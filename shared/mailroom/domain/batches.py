"""Bulk batches (issue 17): one content, many recipients, each with its own outcome.

A batch request is a single send's content (``SendRequest`` without its
recipients: whatever content a single send accepts, a batch accepts, and
inline content added to ``SendRequest`` later becomes batch content with no
change here) and a list of recipients, inline or in an uploaded NDJSON or
CSV file. The recipients are read as ``RecipientRecord``s in order; each has
its index in the batch, the key that makes planning resumable.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.json_schema import SkipJsonSchema

from mailroom.domain.addresses import Mailbox
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import InvalidRequest, MailroomError, NoEmailColumn
from mailroom.domain.feedback import bare_address
from mailroom.domain.queues import QUEUE_NAME_PATTERN
from mailroom.domain.strict_json import parse_json

# Inline recipients per POST /v1/batches; more go through an upload.
MAX_INLINE_RECIPIENTS = 10_000
# The largest recipients file a batch reads (documented in README.md).
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
# A longer line is recorded as malformed rather than held in memory.
MAX_LINE_BYTES = 64 * 1024
# The CSV columns that hold the address, in order of preference.
EMAIL_COLUMNS = ("email", "to")
METADATA_COLUMN_PREFIX = "metadata."


class BatchStatus(StrEnum):
    # Issue 18: waiting for its scheduled_at; the scheduler hands it to the planner then.
    SCHEDULED = "scheduled"
    AWAITING_UPLOAD = "awaiting_upload"
    ACCEPTED = "accepted"
    PLANNING = "planning"
    SENDING = "sending"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    # The recipients could not be read at all (a CSV without an email column).
    FAILED = "failed"

    @property
    def is_over(self) -> bool:
        return self in (BatchStatus.FINISHED, BatchStatus.CANCELLED, BatchStatus.FAILED)


class UploadFormat(StrEnum):
    NDJSON = "ndjson"
    CSV = "csv"


class IssueStatus(StrEnum):
    """Why a recipient got no message."""

    REJECTED = "rejected"  # a bad address, a malformed line
    SUPPRESSED = "suppressed"
    DUPLICATE = "duplicate"


Metadata = dict[str, str | int | float | bool]


class BatchRecipient(BaseModel):
    """One inline recipient (an NDJSON line has the same shape)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # Checked by the planner, not here: a bad address is that recipient's
    # outcome ("rejected", with the reason), never the whole batch's 422.
    to: str = Field(
        validation_alias=AliasChoices("to", "email"),
        min_length=1,
        max_length=998,
        description="The recipient's address (`email` is accepted as well).",
    )
    props: dict[str, Any] = Field(
        default_factory=dict, description="Merged over the batch's props for this recipient."
    )
    metadata: Metadata = Field(
        default_factory=dict, max_length=50, description="Merged over the batch's metadata."
    )


class BatchRequest(SendRequest):
    """Body of ``POST /v1/batches``: a single send's content and its recipients."""

    # A single send's recipient fields mean nothing here: every recipient
    # gets a message of its own. Hidden from the document, refused if given.
    to: SkipJsonSchema[list[str]] = Field(default_factory=list)
    cc: SkipJsonSchema[list[str]] = Field(default_factory=list)
    bcc: SkipJsonSchema[list[str]] = Field(default_factory=list)
    queue: str | None = Field(
        default=None,
        pattern=QUEUE_NAME_PATTERN,
        description=(
            "The client's queue (see /v1/queues) every message goes through, on its priority "
            "band; the `default` queue when omitted. Unknown: 422 unknown_queue; draining: "
            "409 queue_draining; paused: the batch is accepted (its note says so) and its "
            "messages are held until the queue resumes."
        ),
    )
    recipients: list[BatchRecipient] = Field(
        default_factory=list,
        max_length=MAX_INLINE_RECIPIENTS,
        description=f"Up to {MAX_INLINE_RECIPIENTS:,} recipients; more go through an upload.",
    )
    recipients_upload: bool = Field(
        default=False,
        description=(
            "Upload the recipients as a file instead: the answer carries a presigned PUT "
            "URL, and the batch starts on POST /v1/batches/{id}/start."
        ),
    )
    upload_format: UploadFormat = Field(
        default=UploadFormat.NDJSON,
        description="ndjson: one recipient object per line; csv: a header naming an email column.",
    )
    allow_duplicates: bool = Field(
        default=False,
        description="Send to an address as often as it is listed (by default: once).",
    )

    @model_validator(mode="after")
    def _recipients_one_way(self) -> Self:
        if self.to or self.cc or self.bcc:
            raise InvalidRequest(
                "a batch's recipients go in `recipients` (or an upload), not to, cc or bcc",
                details=[{"field": "to", "message": "not used by batches"}],
            )
        if self.recipients_upload and self.recipients:
            raise InvalidRequest(
                "give recipients inline or upload them, not both",
                details=[{"field": "recipients", "message": "not with recipients_upload"}],
            )
        if not self.recipients_upload and not self.recipients:
            raise InvalidRequest(
                "a batch needs recipients: list them, or set recipients_upload",
                details=[{"field": "recipients", "message": "at least one recipient"}],
            )
        return self

    def __repr__(self) -> str:
        # Powertools logs the route's arguments at debug level with an
        # f-string, so this runs on every request: the default repr of
        # 10,000 recipients cost 0.3 s of a POST.
        return (
            f"BatchRequest(template={self.template!r}, recipients={len(self.recipients)}, "
            f"recipients_upload={self.recipients_upload})"
        )

    def content(self) -> dict[str, Any]:
        """What every message of the batch shares, as stored on the batch."""
        return self.model_dump(
            mode="json",
            by_alias=True,
            exclude={
                "to",
                "cc",
                "bcc",
                "recipients",
                "recipients_upload",
                "upload_format",
                "allow_duplicates",
                # Kept in its own column: when the batch is planned, not message content.
                "scheduled_at",
            },
        )


@dataclass(frozen=True, slots=True)
class RecipientRecord:
    """One recipient as read: its index, where it was, and either its data or why not."""

    index: int
    line: int | None
    # Bytes of the file consumed once this record is read (0 for inline).
    end_offset: int = 0
    address: str | None = None
    props: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedRecipient:
    """A record that passed the address check: what the planner writes."""

    index: int
    header_value: str
    bare: str
    props: dict[str, Any]
    metadata: dict[str, Any]


def check_address(record: RecipientRecord) -> PlannedRecipient | str:
    """The recipient to plan, or the reason it is rejected (the single send's address check)."""
    if record.error is not None:
        return record.error
    assert record.address is not None
    try:
        # The single send's check (Mailbox.parse is what its validator runs).
        header_value = Mailbox.parse("to", record.address).header_value()
    except MailroomError as error:
        return error.message
    return PlannedRecipient(
        record.index, header_value, bare_address(header_value), record.props, record.metadata
    )


def inline_records(
    recipients: Iterable[dict[str, Any]], start: int = 0
) -> Iterator[RecipientRecord]:
    """The stored inline recipients from index ``start`` on (the planner's resume point)."""
    for index, item in enumerate(recipients):
        if index < start:
            continue
        yield RecipientRecord(
            index=index,
            line=None,
            address=item.get("email"),
            props=item.get("props") or {},
            metadata=item.get("metadata") or {},
        )


_METADATA_VALUE_TYPES = (str, int, float, bool)
_MAX_METADATA_KEYS = 50


def _plain_recipient(value: Any) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """(address, props, metadata) of a line of the usual shape, else None.

    What ``BatchRecipient`` would answer for such a line, at a fifth of the
    cost (its validation was a quarter of the planner's Python time per
    recipient, issue 17): only exact types pass, so anything pydantic
    might coerce, refuse or name in an error goes to it instead. A test
    holds the two to the same answers.
    """
    if type(value) is not dict or not 1 <= len(value) <= 3:
        return None
    to = value.get("to")
    if to is None:
        to = value.get("email")
    elif "email" in value:
        return None
    props = value.get("props", {})
    metadata = value.get("metadata", {})
    if (
        type(to) is not str
        or not 1 <= len(to) <= 998
        or type(props) is not dict
        or type(metadata) is not dict
        or len(value) != 1 + ("props" in value) + ("metadata" in value)
        or len(metadata) > _MAX_METADATA_KEYS
    ):
        return None
    for key, item in metadata.items():
        if type(key) is not str or type(item) not in _METADATA_VALUE_TYPES:
            return None
    return to, props, metadata


def _record_from_object(index: int, line: int, end: int, value: Any) -> RecipientRecord:
    plain = _plain_recipient(value)
    if plain is not None:
        return RecipientRecord(index, line, end, *plain)
    try:
        recipient = BatchRecipient.model_validate(value)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "line"
        return RecipientRecord(
            index, line, end, error=f"malformed line {line}: {where}: {first['msg']}"
        )
    return RecipientRecord(
        index, line, end, recipient.to, dict(recipient.props), dict(recipient.metadata)
    )


def ndjson_records(
    lines: Iterable[tuple[bytes, int]], *, first_index: int = 0, first_line: int = 1
) -> Iterator[RecipientRecord]:
    """Records of NDJSON ``(line bytes, end offset)`` pairs; blank lines are skipped.

    A line that is not a JSON object of the recipient shape is a rejected
    record naming its line number; the rest of the file proceeds.
    """
    index, line = first_index, first_line - 1
    for raw, end in lines:
        line += 1
        text = raw.strip()
        if not text:
            continue
        if len(raw) > MAX_LINE_BYTES:
            record = RecipientRecord(
                index, line, end, error=f"malformed line {line}: longer than {MAX_LINE_BYTES} bytes"
            )
        else:
            try:
                value = parse_json(text)
            except MailroomError as error:
                reason = error.message.replace("the request body is", "the line is")
                record = RecipientRecord(index, line, end, error=f"malformed line {line}: {reason}")
            else:
                record = _record_from_object(index, line, end, value)
        yield record
        index += 1


@dataclass(frozen=True, slots=True)
class CsvColumns:
    header: list[str]
    email: int
    props: list[tuple[int, str]]
    metadata: list[tuple[int, str]]


def csv_columns(header_line: bytes) -> CsvColumns:
    """The header's columns; InvalidRequest (no_email_column) without an email column."""
    header = next(csv.reader([header_line.decode("utf-8-sig", errors="replace")]), [])
    names = [name.strip() for name in header]
    lowered = [name.lower() for name in names]
    email = next((lowered.index(name) for name in EMAIL_COLUMNS if name in lowered), None)
    if email is None:
        raise NoEmailColumn(
            f"the CSV header has no email column (one of: {', '.join(EMAIL_COLUMNS)}); "
            f"it names {', '.join(names[:20]) or 'nothing'}",
            details=[{"field": "header", "message": "no email column"}],
        )
    props, metadata = [], []
    for position, name in enumerate(names):
        if position == email or not name:
            continue
        if name.lower().startswith(METADATA_COLUMN_PREFIX):
            metadata.append((position, name[len(METADATA_COLUMN_PREFIX) :]))
        else:
            props.append((position, name))
    return CsvColumns(names, email, props, metadata)


def csv_records(
    columns: CsvColumns,
    lines: Iterable[tuple[bytes, int]],
    *,
    first_index: int = 0,
    first_line: int = 2,
) -> Iterator[RecipientRecord]:
    """Records of the CSV lines after the header; other columns become props (as text).

    A quoted field may span lines: the record ends where its last line
    does, and its line number is its first line's. A row with another
    number of fields than the header is a rejected record.
    """
    source = iter(lines)
    state = {"end": 0, "line": first_line - 1}

    def text_lines() -> Iterator[str]:
        for raw, end in source:
            state["end"] = end
            state["line"] += 1
            yield raw.decode("utf-8", errors="replace")

    reader = csv.reader(text_lines())
    index = first_index
    start_line = first_line
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield RecipientRecord(
                index, start_line, state["end"], error=f"malformed line {start_line}: {error}"
            )
            index += 1
            start_line = state["line"] + 1
            continue
        line, start_line = start_line, state["line"] + 1
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(columns.header):
            record = RecipientRecord(
                index,
                line,
                state["end"],
                error=(
                    f"malformed line {line}: {len(row)} fields where the header has "
                    f"{len(columns.header)}"
                ),
            )
        else:
            record = RecipientRecord(
                index,
                line,
                state["end"],
                row[columns.email].strip(),
                {name: row[position] for position, name in columns.props},
                {name: row[position] for position, name in columns.metadata},
            )
        yield record
        index += 1


def split_lines(chunks: Iterable[bytes], start_offset: int = 0) -> Iterator[tuple[bytes, int]]:
    """``(line, offset after it)`` of a byte stream, without holding more than a line.

    A line longer than MAX_LINE_BYTES is cut there (its record is then
    malformed) so that one huge line cannot fill the memory.
    """
    offset = start_offset
    pending = io.BytesIO()
    for chunk in chunks:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                if pending.tell() <= MAX_LINE_BYTES:
                    pending.write(chunk[start : start + MAX_LINE_BYTES + 1])
                offset += len(chunk) - start
                break
            piece = chunk[start : newline + 1]
            offset += len(piece)
            if pending.tell():
                if pending.tell() <= MAX_LINE_BYTES:
                    pending.write(piece[: MAX_LINE_BYTES + 1])
                line = pending.getvalue()
                pending = io.BytesIO()
            else:
                line = piece
            yield line, offset
            start = newline + 1
    if pending.tell():
        yield pending.getvalue(), offset
