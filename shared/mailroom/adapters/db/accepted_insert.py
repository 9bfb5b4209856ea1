"""An accepted message in one statement: its row, its ``accepted`` event, its recipient rows.

The send API wrote these with three INSERTs (three round trips through
pure-Python pg8000, about a third of the handler's time, issue 8). Here one
statement does it with data-modifying CTEs; the foreign keys of the event and
recipient rows are checked at the end of the statement, when the message row
exists. A fixed text statement, so SQLAlchemy compiles it once per process;
the recipients travel as two array literals (``unnest``), whatever their number. The
send's suppression check rides along in the same statement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Session

from mailroom.adapters.db.array_literals import text_array
from mailroom.adapters.db.feedback_repositories import suppression_of
from mailroom.domain.feedback import Suppression
from mailroom.domain.model import EventType, Message

# The active suppressions of the addresses to screen (none: nothing is
# screened) are read first; the writes happen only if there are none, and the
# statement answers with them. The common case, no recipient suppressed, is
# then one round trip for the check and the writes (issue 8); otherwise
# nothing is written and the caller screens and writes again.
_ACCEPT = text(
    """
    WITH blocked AS (
        SELECT id, address, reason, client_id, expires_at, source, note,
               created_at, updated_at, is_test
        FROM suppressions
        WHERE address = ANY(CAST(:screened AS text[]))
          AND (client_id IS NULL OR client_id = :client_id)
          AND (expires_at IS NULL OR expires_at > now())
          AND (NOT is_test OR :is_test)
    ), accepted AS (
        INSERT INTO messages (
            id, client_id, trace_id, template_name, template_version, template_shared,
            from_address,
            recipient, to_addresses, cc_addresses, bcc_addresses, reply_to, subject,
            props, metadata, status, attempts, last_error, is_test, options,
            scheduled_at, schedule_id, schedule_run_id
        )
        SELECT
            :id, :client_id, :trace_id, :template_name, :template_version, :template_shared,
            :from_address,
            :recipient, :to_addresses, :cc_addresses, :bcc_addresses, :reply_to, :subject,
            :props, :metadata, :status, :attempts, :last_error, :is_test, :options,
            :scheduled_at, :schedule_id, :schedule_run_id
        WHERE NOT EXISTS (SELECT 1 FROM blocked)
        RETURNING id
    ), event AS (
        INSERT INTO message_events (message_id, type, detail)
        SELECT id, :event_type, :detail FROM accepted
    ), recipients AS (
        INSERT INTO message_recipients (message_id, address, kind)
        SELECT accepted.id, r.address, r.kind
        FROM accepted,
             unnest(CAST(:addresses AS text[]), CAST(:kinds AS text[])) AS r(address, kind)
        ON CONFLICT (message_id, address) DO NOTHING
    )
    SELECT id, address, reason, client_id, expires_at, source, note, created_at, updated_at,
           is_test
    FROM blocked
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("client_id", type_=UUID(as_uuid=True)),
    bindparam("to_addresses", type_=JSONB),
    bindparam("cc_addresses", type_=JSONB),
    bindparam("bcc_addresses", type_=JSONB),
    bindparam("reply_to", type_=JSONB),
    bindparam("props", type_=JSONB),
    bindparam("metadata", type_=JSONB),
    bindparam("options", type_=JSONB),
    bindparam("detail", type_=JSONB),
    bindparam("scheduled_at", type_=DateTime(timezone=True)),
    bindparam("schedule_id", type_=UUID(as_uuid=True)),
    bindparam("schedule_run_id", type_=UUID(as_uuid=True)),
)


def insert_accepted(
    session: Session,
    message: Message,
    detail: dict[str, Any],
    recipients: list[tuple[str, str]],
    *,
    screened: Sequence[str] = (),
) -> list[Suppression]:
    """Inside the caller's transaction; ``recipients`` are (bare address, kind) pairs.

    Nothing is written if any of the ``screened`` bare addresses has an
    active suppression (global or the message's client's; test traffic's
    entries for test messages only): those come back.
    """
    rows = session.execute(
        _ACCEPT,
        {
            "id": message.id,
            "client_id": message.client_id,
            "trace_id": message.trace_id,
            "template_name": message.template_name,
            "template_version": message.template_version,
            "template_shared": message.template_shared,
            "from_address": message.from_address,
            "recipient": message.recipient,
            "to_addresses": message.to,
            "cc_addresses": message.cc,
            "bcc_addresses": message.bcc,
            "reply_to": message.reply_to,
            "subject": message.subject,
            "props": message.props,
            "metadata": message.metadata,
            "options": message.options.to_document(),
            "status": message.status.value,
            "attempts": message.attempts,
            "last_error": message.last_error,
            "is_test": message.is_test,
            "scheduled_at": message.scheduled_at,
            "schedule_id": message.schedule_id,
            "schedule_run_id": message.schedule_run_id,
            "event_type": EventType.ACCEPTED.value,
            "detail": detail,
            "addresses": text_array([address for address, _ in recipients]),
            "kinds": text_array([kind for _, kind in recipients]),
            "screened": text_array(screened),
        },
    ).all()
    return [suppression_of(row) for row in rows]


# A batch's accepted messages (issue 17), in one statement whatever their
# number: the rows travel as one JSON array, spread into columns by
# jsonb_to_recordset, so the statement text is fixed (compiled once) and
# the parameters are three, not nineteen per message.
_ACCEPT_MANY = text(
    """
    WITH batch AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
            id uuid, client_id uuid, trace_id text, template_name text,
            template_version integer, template_shared boolean, from_address text,
            recipient text, to_addresses jsonb, cc_addresses jsonb, bcc_addresses jsonb,
            reply_to jsonb, subject text, props jsonb, metadata jsonb, status text,
            attempts integer, last_error text, is_test boolean, detail jsonb,
            recipients jsonb
        )
    ), accepted AS (
        INSERT INTO messages (
            id, client_id, trace_id, template_name, template_version, template_shared,
            from_address,
            recipient, to_addresses, cc_addresses, bcc_addresses, reply_to, subject,
            props, metadata, status, attempts, last_error, is_test
        )
        SELECT
            id, client_id, trace_id, template_name, template_version, template_shared,
            from_address,
            recipient, to_addresses, cc_addresses, bcc_addresses, reply_to, subject,
            props, metadata, status, attempts, last_error, is_test
        FROM batch
        RETURNING id
    ), event AS (
        INSERT INTO message_events (message_id, type, detail)
        SELECT id, :event_type, detail FROM batch
    ), recipients AS (
        INSERT INTO message_recipients (message_id, address, kind)
        SELECT batch.id, r.address, r.kind
        FROM batch, jsonb_to_recordset(batch.recipients) AS r(address text, kind text)
        ON CONFLICT (message_id, address) DO NOTHING
    )
    SELECT count(*) FROM accepted
    """
)


def insert_accepted_many(
    session: Session,
    accepted: Sequence[tuple[Message, dict[str, Any], list[tuple[str, str]]]],
) -> None:
    """In the caller's transaction: (message, event detail, recipients) each, screened already."""
    rows = [
        {
            "id": str(message.id),
            "client_id": str(message.client_id),
            "trace_id": message.trace_id,
            "template_name": message.template_name,
            "template_version": message.template_version,
            "template_shared": message.template_shared,
            "from_address": message.from_address,
            "recipient": message.recipient,
            "to_addresses": message.to,
            "cc_addresses": message.cc,
            "bcc_addresses": message.bcc,
            "reply_to": message.reply_to,
            "subject": message.subject,
            "props": message.props,
            "metadata": message.metadata,
            "status": message.status.value,
            "attempts": message.attempts,
            "last_error": message.last_error,
            "is_test": message.is_test,
            "detail": detail,
            "recipients": [{"address": address, "kind": kind} for address, kind in recipients],
        }
        for message, detail, recipients in accepted
    ]
    session.execute(
        _ACCEPT_MANY,
        {"rows": json.dumps(rows, separators=(",", ":")), "event_type": EventType.ACCEPTED.value},
    )
