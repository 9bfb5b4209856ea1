"""Suppression lists as files: CSV or JSON lines in, the same out. No I/O.

An import is read line by line: every line that holds a good entry is kept,
every bad one is reported with its line number and why, and neither affects
the other (``parse_import``). Only the file as a whole can be refused: too
many rows (413), or a CSV without an address column (422). Whether the good
lines are written when some are bad is the caller's choice (``atomic``).

Columns (CSV header names, JSON keys), case-insensitive in CSV:

- ``address`` or ``email``: required; ``Name <addr>`` is read as ``addr``;
- ``reason``: ``hard_bounce``, ``complaint``, ``unsubscribe`` or ``manual``
  (empty or missing: ``manual``);
- ``expires_at``: ISO 8601 with an offset, in the future (empty: never);
- ``note``: at most 500 characters.

Anything else (``scope``, ``client_id``, ``created_at``... as an export
writes them) is ignored, so an export imports as it is. Who the entries are
for is the request's to say, never the file's.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from mailroom.domain.addresses import Mailbox
from mailroom.domain.errors import InvalidRequest, MailroomError, PayloadTooLarge
from mailroom.domain.feedback import Suppression, SuppressionReason, bare_address
from mailroom.domain.strict_json import parse_json

# One import request: 10,000 rows in at most 1 MiB (a row is ~50 bytes; the
# byte limit binds first only for long notes). Larger lists go in several.
MAX_IMPORT_ROWS = 10_000
MAX_IMPORT_BYTES = 1024 * 1024
# A file of 10,000 bad lines is not answered with 10,000 errors.
MAX_REPORTED_ERRORS = 100
MAX_NOTE_CHARS = 500
ADDRESS_COLUMNS = ("address", "email")


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"

    @property
    def media_type(self) -> str:
        return CSV_MEDIA_TYPE if self is FileFormat.CSV else JSONL_MEDIA_TYPE

    @classmethod
    def of_media_type(cls, media_type: str) -> FileFormat | None:
        return _FORMAT_BY_MEDIA_TYPE.get(media_type.partition(";")[0].strip().lower())


CSV_MEDIA_TYPE = "text/csv"
JSONL_MEDIA_TYPE = "application/x-ndjson"
_FORMAT_BY_MEDIA_TYPE = {CSV_MEDIA_TYPE: FileFormat.CSV, JSONL_MEDIA_TYPE: FileFormat.JSONL}
IMPORT_MEDIA_TYPES = (CSV_MEDIA_TYPE, JSONL_MEDIA_TYPE)


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    address: str  # bare_address form: one key for every spelling of a mailbox
    reason: SuppressionReason
    expires_at: datetime | None
    note: str | None


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    message: str
    field: str | None = None

    def detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"line": self.line, "message": self.message}
        if self.field:
            detail["field"] = self.field
        return detail


@dataclass(slots=True)
class ParsedImport:
    """The good rows (one per address: the last line naming it wins) and the bad lines."""

    rows: list[ImportRow] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    received: int = 0  # data lines seen, blank ones not counted
    duplicates: int = 0  # good lines that named an address a later line named again


def parse_import(text: str, form: FileFormat, *, now: datetime) -> ParsedImport:
    """Every line of the file, read; PayloadTooLarge past MAX_IMPORT_ROWS, nothing kept then."""
    records = _csv_records(text) if form is FileFormat.CSV else _jsonl_records(text)
    parsed = ParsedImport()
    by_address: dict[str, ImportRow] = {}
    for line, record in records:
        parsed.received += 1
        if parsed.received > MAX_IMPORT_ROWS:
            raise PayloadTooLarge(
                f"an import holds at most {MAX_IMPORT_ROWS} rows; split the file",
                details=[{"limit_rows": MAX_IMPORT_ROWS}],
            )
        if isinstance(record, LineError):
            parsed.errors.append(record)
            continue
        try:
            row = _row(line, record, now)
        except MailroomError as error:
            parsed.errors.append(LineError(line, error.message, _field_of(error)))
            continue
        if row.address in by_address:
            parsed.duplicates += 1
            del by_address[row.address]  # keeps the file's order for the later line
        by_address[row.address] = row
    parsed.rows = list(by_address.values())
    return parsed


def _csv_records(text: str) -> Iterator[tuple[int, dict[str, Any] | LineError]]:
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise _no_header(f"the header row cannot be read: {error}") from None
    names = [name.strip().lower() for name in header or []]
    if not any(column in names for column in ADDRESS_COLUMNS):
        raise _no_header("the first row must be a header naming an 'address' or 'email' column")
    # With both, ``address`` is the one read (it is what an export writes).
    address_at = names.index("address") if "address" in names else names.index("email")
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            # A broken quote or an oversized field: the rest cannot be told apart.
            yield line, LineError(line, f"unreadable CSV, reading stopped here: {error}")
            return
        if not any(cell.strip() for cell in cells):
            continue
        record: dict[str, Any] = {
            name: cells[index] for index, name in enumerate(names) if index < len(cells)
        }
        record["address"] = cells[address_at] if address_at < len(cells) else ""
        yield line, record


def _jsonl_records(text: str) -> Iterator[tuple[int, dict[str, Any] | LineError]]:
    # Split on \n only: a JSON string may hold U+2028, which splitlines() breaks at.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            value = parse_json(line)
        except MailroomError as error:
            yield number, LineError(number, error.message)
            continue
        if not isinstance(value, dict):
            yield number, LineError(number, "each line must be one JSON object")
            continue
        record = {str(key).lower(): item for key, item in value.items()}
        if "address" not in record and "email" in record:
            record["address"] = record["email"]
        yield number, record


def _row(line: int, record: dict[str, Any], now: datetime) -> ImportRow:
    raw_address = _text(record, "address")
    if not raw_address:
        raise InvalidRequest("no address", details=[{"field": "address"}])
    mailbox = Mailbox.parse("address", raw_address)
    reason_text = (_text(record, "reason") or SuppressionReason.MANUAL.value).lower()
    try:
        reason = SuppressionReason(reason_text)
    except ValueError:
        allowed = ", ".join(reason.value for reason in SuppressionReason)
        raise InvalidRequest(
            f"reason '{reason_text[:40]}' is not one of {allowed}", details=[{"field": "reason"}]
        ) from None
    expires_at = _expiry(_text(record, "expires_at"), now)
    note = _text(record, "note") or None
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise InvalidRequest(
            f"note is longer than {MAX_NOTE_CHARS} characters", details=[{"field": "note"}]
        )
    return ImportRow(line, bare_address(mailbox.address), reason, expires_at, note)


def _text(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string", details=[{"field": name}])
    return value.strip()


def _expiry(value: str, now: datetime) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidRequest(
            "expires_at must be an ISO 8601 time with an offset, e.g. 2027-01-01T00:00:00Z",
            details=[{"field": "expires_at"}],
        )
    if moment <= now:
        raise InvalidRequest("expires_at must be in the future", details=[{"field": "expires_at"}])
    return moment


def _field_of(error: MailroomError) -> str | None:
    for detail in error.details:
        if isinstance(detail, dict) and isinstance(detail.get("field"), str):
            return str(detail["field"])
    return None


def _no_header(message: str) -> InvalidRequest:
    return InvalidRequest(message, details=[{"field": "body", "line": 1, "message": message}])


# --- export ------------------------------------------------------------------

# What a client's export holds: its own entries, in columns an import reads back.
CLIENT_EXPORT_FIELDS = (
    "address",
    "reason",
    "expires_at",
    "note",
    "source",
    "created_at",
    "updated_at",
)
# An operator's export: any scope, so it says whose each entry is.
ADMIN_EXPORT_FIELDS = (
    "address",
    "scope",
    "client_id",
    "reason",
    "source",
    "note",
    "created_at",
    "updated_at",
    "expires_at",
)


def export_record(entry: Suppression, fields: Sequence[str]) -> dict[str, str | None]:
    values: dict[str, str | None] = {
        "address": entry.address,
        "scope": entry.scope.value,
        "client_id": str(entry.client_id) if entry.client_id else None,
        "reason": entry.reason.value,
        "source": entry.source,
        "note": entry.note,
        "created_at": _iso(entry.created_at),
        "updated_at": _iso(entry.updated_at),
        "expires_at": _iso(entry.expires_at),
    }
    return {name: values[name] for name in fields}


def export_header(form: FileFormat, fields: Sequence[str]) -> str:
    return _csv_line(list(fields)) if form is FileFormat.CSV else ""


def export_line(entry: Suppression, form: FileFormat, fields: Sequence[str]) -> str:
    record = export_record(entry, fields)
    if form is FileFormat.CSV:
        return _csv_line(["" if value is None else value for value in record.values()])
    return json.dumps(record, ensure_ascii=False) + "\n"


def _csv_line(cells: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
