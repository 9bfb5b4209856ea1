"""Bulk import and export of a suppression list over HTTP: shared by /v1 and /admin routes.

The route declares its body (``IMPORT_BODY``) so the request reader accepts
CSV and JSON lines for it; these helpers turn the request into a service
call and the result into an answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, Field

from mailroom.adapters.db.feedback_repositories import SuppressionFilter
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.errors import UnsupportedMediaType
from mailroom.domain.suppression_files import (
    CSV_MEDIA_TYPE,
    IMPORT_MEDIA_TYPES,
    JSONL_MEDIA_TYPE,
    MAX_IMPORT_BYTES,
    MAX_IMPORT_ROWS,
    MAX_REPORTED_ERRORS,
    FileFormat,
)
from mailroom.domain.tenancy import Actor
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import TEXT_BODY_ERRORS, answers, text_answers
from mailroom.entrypoints.request_body import TextBody
from mailroom.services import suppression as suppressions

IMPORT_BODY = TextBody(
    media_types=IMPORT_MEDIA_TYPES,
    max_bytes=MAX_IMPORT_BYTES,
    description=(
        f"At most {MAX_IMPORT_ROWS} rows and {MAX_IMPORT_BYTES} bytes, UTF-8. `text/csv`: a "
        "header row naming an `address` (or `email`) column and optionally `reason`, "
        "`expires_at`, `note`; `application/x-ndjson`: one JSON object per line with the "
        "same keys. Other columns and keys are ignored, so an export imports as it is."
    ),
    examples=(
        (
            CSV_MEDIA_TYPE,
            "address,reason,expires_at,note\r\nada@example.com,unsubscribe,,asked by phone\r\n"
            "grace@example.com,manual,2030-01-01T00:00:00Z,\r\n",
        ),
        (
            JSONL_MEDIA_TYPE,
            '{"address": "ada@example.com", "reason": "unsubscribe"}\n'
            '{"email": "grace@example.com", "expires_at": "2030-01-01T00:00:00Z"}\n',
        ),
    ),
)
NEXT_CURSOR_HEADER = "X-Next-Cursor"


class ImportLineError(BaseModel):
    line: int = Field(description="1-based line of the file (a CSV record's first line)")
    message: str
    field: str | None = None


class ImportReportView(BaseModel):
    received: int = Field(description="Data lines read (blank lines not counted)")
    created: int
    updated: int = Field(description="Entries that existed already (a re-import)")
    duplicates: int = Field(description="Lines naming an address a later line names again")
    failed: int = Field(description="Bad lines; each is listed in `errors`")
    errors: list[ImportLineError] = Field(
        description=f"The first {MAX_REPORTED_ERRORS} bad lines, in file order"
    )


def import_answers(scope_note: str) -> dict[int, OpenAPIResponse]:
    return answers(
        200,
        f"Imported: the good lines {scope_note}; each bad line reported",
        ImportReportView,
        errors={
            **TEXT_BODY_ERRORS,
            413: (
                f"payload_too_large: more than {MAX_IMPORT_ROWS} rows or {MAX_IMPORT_BYTES} bytes"
            ),
            422: (
                "validation_error: no header naming an address column; with atomic=true, "
                "a bad line (every one listed in details, nothing written); "
                "unsupported_value: a NUL in the body"
            ),
        },
    )


def import_file(
    router: Router,
    uow: UnitOfWork,
    *,
    client_id: uuid.UUID | None,
    actor: Actor,
    atomic: bool,
    source: str,
) -> ImportReportView:
    event = router.current_event
    form = FileFormat.of_media_type(event.headers.get("content-type") or "")
    if form is None:
        # A JSON body reaches here (the reader accepts JSON for every route).
        accepted = "' or '".join(IMPORT_MEDIA_TYPES)
        raise UnsupportedMediaType(
            f"send the file with 'Content-Type: {accepted}'",
            details=[{"accepted": list(IMPORT_MEDIA_TYPES)}],
        )
    report = suppressions.import_suppressions(
        uow,
        event.body or "",
        form,
        client_id=client_id,
        actor=actor,
        atomic=atomic,
        source=source,
    )
    logger.info(
        "suppressions imported",
        extra={
            "format": form.value,
            # Not "created": LogRecord has an attribute of that name.
            "entries_created": report.created,
            "entries_updated": report.updated,
            "lines_failed": report.failed,
        },
    )
    return ImportReportView(
        received=report.received,
        created=report.created,
        updated=report.updated,
        duplicates=report.duplicates,
        failed=report.failed,
        errors=[
            ImportLineError(line=error.line, message=error.message, field=error.field)
            for error in report.errors[:MAX_REPORTED_ERRORS]
        ],
    )


def export_answers(what: str) -> dict[int, OpenAPIResponse]:
    return text_answers(
        200,
        f"{what}, as one file (CSV with its header row, or JSON lines), oldest entry first. "
        f"At most {suppressions.MAX_EXPORT_ROWS} entries and "
        f"{suppressions.MAX_EXPORT_BYTES} bytes; the rest is behind `{NEXT_CURSOR_HEADER}`",
        IMPORT_MEDIA_TYPES,
        headers={
            NEXT_CURSOR_HEADER: (
                "Present when more entries follow: pass it as `cursor` for the next file"
            )
        },
        errors={422: "validation_error: a bad format or filter, or a cursor not from here"},
    )


def export_file(
    uow: UnitOfWork,
    where: SuppressionFilter,
    form: FileFormat,
    fields: Sequence[str],
    cursor: str | None,
) -> Response[str]:
    page = suppressions.export_suppressions(uow, where, form, fields, cursor=cursor)
    headers = {NEXT_CURSOR_HEADER: page.next_cursor} if page.next_cursor else {}
    return Response(status_code=200, content_type=form.media_type, body=page.text, headers=headers)
