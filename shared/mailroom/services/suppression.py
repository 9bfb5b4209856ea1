"""The suppression list: checked before a message is accepted and again before it is sent.

A message whose every To address is suppressed is refused with ``suppressed``
(the row is written as failed, with a ``suppressed`` event, so the refusal has
a history like any other outcome). Otherwise the suppressed addresses are
dropped from To, Cc and Bcc, the rest is sent, and each dropped address is
recorded as a ``suppressed`` recipient outcome with a ``recipients_suppressed``
event. A message with only Cc or Bcc recipients left is refused too: it would
go out to copies of a mail whose addressees were all removed.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from mailroom.adapters.db.feedback_repositories import SuppressionFilter
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.addresses import Mailbox
from mailroom.domain.errors import (
    InvalidRequest,
    RecipientsSuppressed,
    SuppressionIsGlobal,
    SuppressionNotFound,
)
from mailroom.domain.feedback import (
    RecipientOutcome,
    RecipientStatus,
    Suppression,
    SuppressionReason,
    SuppressionScope,
    bare_address,
)
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.domain.suppression_files import (
    MAX_REPORTED_ERRORS,
    FileFormat,
    LineError,
    export_header,
    export_line,
    parse_import,
)
from mailroom.domain.tenancy import SYSTEM_ACTOR, Actor, AuditEntry

SUPPRESSED_ERROR = "suppressed: every recipient is on the suppression list"
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class DroppedRecipient:
    value: str  # as the caller wrote it, e.g. "Ada <ada@example.com>"
    address: str  # bare and lowercased
    kind: str  # to, cc or bcc
    suppression: Suppression


@dataclass(frozen=True, slots=True)
class Screening:
    """The recipients to send to, and those the suppression list removed."""

    to: list[str]
    cc: list[str]
    bcc: list[str]
    requested: tuple[list[str], list[str], list[str]]
    dropped: list[DroppedRecipient] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return bool(self.dropped) and not self.to


def screen(
    uow: UnitOfWork,
    *,
    client_id: uuid.UUID,
    to: list[str],
    cc: list[str],
    bcc: list[str],
    now: datetime | None = None,
    is_test: bool = False,
) -> Screening:
    with uow:
        addresses = sorted({bare_address(value) for value in (*to, *cc, *bcc)})
        active = uow.suppressions.active_for(
            client_id, addresses, now or datetime.now(UTC), include_test=is_test
        )
        return screening_of(active, to, cc, bcc)


def screening_of(
    active: Sequence[Suppression], to: list[str], cc: list[str], bcc: list[str]
) -> Screening:
    """The recipients to send to and those dropped, given the suppressions that apply."""
    requested = (list(to), list(cc), list(bcc))
    if not active:
        return Screening(to=list(to), cc=list(cc), bcc=list(bcc), requested=requested)
    # A client's own entry says more about it than a global one.
    by_address = {entry.address: entry for entry in sorted(active, key=_global_first)}
    kept: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
    dropped: list[DroppedRecipient] = []
    for kind, values in zip(("to", "cc", "bcc"), requested, strict=True):
        for value in values:
            address = bare_address(value)
            if address in by_address:
                dropped.append(DroppedRecipient(value, address, kind, by_address[address]))
            else:
                kept[kind].append(value)
    return Screening(
        to=kept["to"], cc=kept["cc"], bcc=kept["bcc"], requested=requested, dropped=dropped
    )


def record_recipients(uow: UnitOfWork, message: Message, screening: Screening) -> None:
    """Inside the caller's transaction: a row per recipient, outcomes for the dropped."""
    uow.recipients.add_all(message.id, recipient_rows(message))
    record_dropped(uow, message, screening)


def recipient_rows(message: Message) -> list[tuple[str, str]]:
    """(bare address, kind) per recipient, once each: the rows ``record_recipients`` writes."""
    rows = [
        (bare_address(value), kind)
        for kind, values in (("to", message.to), ("cc", message.cc), ("bcc", message.bcc))
        for value in values
    ]
    return list(dict.fromkeys(rows))


def record_dropped(uow: UnitOfWork, message: Message, screening: Screening) -> None:
    """Inside the caller's transaction: outcomes and the event for the dropped, if any."""
    _record_dropped(uow, message, screening)


def refuse(uow: UnitOfWork, message: Message, screening: Screening) -> NoReturn:
    """Write the message as failed with its history, then raise ``suppressed``."""
    message.to, message.cc, message.bcc = (list(part) for part in screening.requested)
    message.status = MessageStatus.FAILED
    message.last_error = SUPPRESSED_ERROR
    with uow:
        uow.messages.add(message)
        record_recipients(uow, message, screening)
        uow.commit()
    raise RecipientsSuppressed(
        "every recipient of this message is on the suppression list; nothing was sent",
        details=[
            {"message_id": str(message.id)},
            *(_dropped_detail(entry) for entry in screening.dropped),
        ],
    )


def screen_before_send(uow: UnitOfWork, message: Message, *, now: datetime | None = None) -> bool:
    """The worker's check: drop what was suppressed since acceptance; False if nothing is left.

    ``message`` is changed in memory only (the stored To/Cc/Bcc keep what the
    caller asked for); the outcomes say who was dropped. Safe to repeat on a
    retry: an outcome already recorded is not recorded, or announced, again.
    """
    screening = screen(
        uow,
        client_id=message.client_id,
        to=message.to,
        cc=message.cc,
        bcc=message.bcc,
        now=now,
        is_test=message.is_test,
    )
    if not screening.dropped:
        return True
    message.to, message.cc, message.bcc = screening.to, screening.cc, screening.bcc
    with uow:
        _record_dropped(uow, message, screening)
        uow.commit()
    return not screening.refused


def active_for_batch(
    uow: UnitOfWork, messages: Sequence[Message], *, now: datetime | None = None
) -> list[Suppression]:
    """The suppressions that apply to any recipient of the batch: one query.

    Runs in the caller's open transaction (the worker reads them in its
    claim's transaction, issue 8), so it opens none itself.
    """
    if not messages:
        return []
    addresses = sorted(
        {
            bare_address(value)
            for message in messages
            for value in (*message.to, *message.cc, *message.bcc)
        }
    )
    return uow.suppressions.active_for_clients(
        [message.client_id for message in messages], addresses, now or datetime.now(UTC)
    )


def screen_batch_before_send(
    uow: UnitOfWork,
    messages: Sequence[Message],
    *,
    now: datetime | None = None,
    active: Sequence[Suppression] | None = None,
) -> set[uuid.UUID]:
    """``screen_before_send`` for a whole batch: one query, and one commit if anything dropped.

    Returns the ids of the messages with no To recipient left (to be failed
    with ``SUPPRESSED_ERROR`` without reaching a provider); the others have
    their suppressed recipients removed in memory, as ``screen_before_send``
    does, with the outcomes and events written here. ``active``, when given,
    is ``active_for_batch``'s answer, already read: no query then.
    """
    if not messages:
        return set()
    if active is None:
        with uow:
            active = active_for_batch(uow, messages, now=now)
    if not active:
        return set()
    refused: set[uuid.UUID] = set()
    screened: list[tuple[Message, Screening]] = []
    for message in messages:
        mine = [entry for entry in active if entry.applies_to(message)]
        screening = screening_of(mine, message.to, message.cc, message.bcc)
        if not screening.dropped:
            continue
        message.to, message.cc, message.bcc = screening.to, screening.cc, screening.bcc
        screened.append((message, screening))
        if screening.refused:
            refused.add(message.id)
    if screened:
        with uow:
            for message, screening in screened:
                _record_dropped(uow, message, screening)
            uow.commit()
    return refused


def _record_dropped(uow: UnitOfWork, message: Message, screening: Screening) -> None:
    newly = [
        entry
        for entry in screening.dropped
        if uow.recipients.record(
            message.id,
            RecipientOutcome(
                address=entry.address,
                status=RecipientStatus.SUPPRESSED,
                kind=entry.kind,
                response=f"suppressed: {entry.suppression.reason.value}",
            ),
        )
    ]
    if newly:
        uow.messages.append_event(
            message.id,
            EventType.SUPPRESSED if screening.refused else EventType.RECIPIENTS_SUPPRESSED,
            {"recipients": [_dropped_detail(entry) for entry in newly]},
        )


def _dropped_detail(entry: DroppedRecipient) -> dict[str, str]:
    return {
        "address": entry.address,
        "kind": entry.kind,
        "reason": entry.suppression.reason.value,
        "scope": entry.suppression.scope.value,
    }


def _global_first(entry: Suppression) -> int:
    return 0 if entry.client_id is None else 1


# --- operators' list ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    entries: list[Suppression]
    next_cursor: str | None


def add_suppression(
    uow: UnitOfWork,
    *,
    address: str,
    client_id: uuid.UUID | None,
    reason: SuppressionReason = SuppressionReason.MANUAL,
    expires_at: datetime | None = None,
    note: str | None = None,
    source: str = "admin",
    actor: Actor = SYSTEM_ACTOR,
    now: datetime | None = None,
) -> Suppression:
    """Add or replace an entry; audited in the same transaction."""
    checked = bare_address(Mailbox.parse("address", address).address)
    if expires_at is not None and expires_at <= (now or datetime.now(UTC)):
        raise InvalidRequest(
            "expires_at must be in the future",
            details=[{"field": "expires_at", "message": "in the past"}],
        )
    with uow:
        if client_id is not None and uow.clients.get(client_id) is None:
            raise InvalidRequest(
                f"no client with id '{client_id}'",
                details=[{"field": "client_id", "message": "unknown client"}],
            )
        entry = uow.suppressions.upsert(
            Suppression(
                address=checked,
                reason=reason,
                client_id=client_id,
                expires_at=expires_at,
                source=source,
                note=note,
            )
        )
        uow.audit.append(_audit(actor, "suppression.add", entry.address, None, _audit_view(entry)))
        uow.commit()
    return entry


def remove_suppression(
    uow: UnitOfWork,
    *,
    address: str,
    client_id: uuid.UUID | None,
    actor: Actor = SYSTEM_ACTOR,
) -> int:
    """Remove the global entry, or one client's; audited in the same transaction."""
    bare = bare_address(address)
    with uow:
        removed = uow.suppressions.remove(bare, client_id)
        if not removed:
            scope = f"client {client_id}" if client_id else "global"
            raise SuppressionNotFound(f"no {scope} suppression for '{address[:320]}'")
        scope_view = {
            "address": bare,
            "client_id": str(client_id) if client_id else None,
            "removed": removed,
        }
        uow.audit.append(_audit(actor, "suppression.remove", bare, scope_view, None))
        uow.commit()
    return removed


def _audit_view(entry: Suppression) -> dict[str, str | None]:
    return {
        "address": entry.address,
        "client_id": str(entry.client_id) if entry.client_id else None,
        "reason": entry.reason.value,
        "source": entry.source,
        "note": entry.note,
        "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
    }


def _audit(
    actor: Actor,
    action: str,
    address: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> AuditEntry:
    # The target is the address: `GET /admin/audit?target=<address>` is its history.
    return actor.entry(action, ("suppression", address), before, after)


def list_suppressions(
    uow: UnitOfWork,
    where: SuppressionFilter,
    *,
    cursor: str | None,
    limit: int,
    now: datetime | None = None,
) -> SuppressionPage:
    after_id = _suppression_cursor(cursor)
    limit = max(1, min(limit, MAX_PAGE))
    if where.address:
        # replace(), not a new filter: every other field (visible_to!) must carry over.
        where = dataclasses.replace(where, address=bare_address(where.address))
    with uow:
        entries = uow.suppressions.list(
            where, now=now or datetime.now(UTC), after_id=after_id, limit=limit + 1
        )
    more = len(entries) > limit
    entries = entries[:limit]
    return SuppressionPage(
        entries=entries, next_cursor=str(entries[-1].id) if more and entries else None
    )


def _suppression_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    # ASCII digits only ("²" is a digit to str.isdigit) and within the id
    # column's bigint: anything else PostgreSQL would answer with an error.
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 19 and int(cursor) < 2**63):
        raise InvalidRequest(
            "cursor is not one this API returned",
            details=[{"field": "cursor", "message": "invalid cursor"}],
        )
    return int(cursor)


# --- a client's own list (/v1/suppressions) -----------------------------------


def client_suppressions(
    uow: UnitOfWork,
    *,
    client_id: uuid.UUID,
    address: str | None,
    reason: SuppressionReason | None,
    include_expired: bool,
    cursor: str | None,
    limit: int,
    now: datetime | None = None,
) -> SuppressionPage:
    """The client's own entries and the active global ones, by id; never another client's."""
    where = SuppressionFilter(
        address=address, reason=reason, include_expired=include_expired, visible_to=client_id
    )
    return list_suppressions(uow, where, cursor=cursor, limit=limit, now=now)


@dataclass(frozen=True, slots=True)
class ClientRemoval:
    removed: int
    # The address stays suppressed for this client: the global list holds it too.
    globally_suppressed: bool


def remove_client_suppression(
    uow: UnitOfWork,
    *,
    address: str,
    client_id: uuid.UUID,
    actor: Actor,
    now: datetime | None = None,
) -> ClientRemoval:
    """Remove the client's own entry; a global one is an operator's (SuppressionIsGlobal)."""
    bare = bare_address(address)
    moment = now or datetime.now(UTC)
    global_only = SuppressionFilter(scope=SuppressionScope.GLOBAL, address=bare)
    with uow:
        removed = uow.suppressions.remove(bare, client_id)
        globally = bool(uow.suppressions.list(global_only, now=moment, after_id=None, limit=1))
        if not removed:
            if globally:
                raise SuppressionIsGlobal(
                    f"'{bare[:320]}' is on the global suppression list, which only an "
                    "operator can change; this client has no entry of its own for it",
                    details=[{"address": bare[:320], "scope": "global"}],
                )
            raise SuppressionNotFound(f"no suppression for '{bare[:320]}'")
        view = {"address": bare, "client_id": str(client_id), "removed": removed}
        uow.audit.append(_audit(actor, "suppression.remove", bare, view, None))
        uow.commit()
    return ClientRemoval(removed=removed, globally_suppressed=globally)


# --- bulk import and export ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportReport:
    received: int  # data lines read
    created: int
    updated: int
    duplicates: int  # lines naming an address a later line named again
    errors: list[LineError]  # every bad line, in file order
    written: bool  # False when atomic and some line was bad

    @property
    def failed(self) -> int:
        return len(self.errors)


def import_suppressions(
    uow: UnitOfWork,
    text: str,
    form: FileFormat,
    *,
    client_id: uuid.UUID | None,
    actor: Actor,
    atomic: bool = False,
    source: str = "import",
    now: datetime | None = None,
) -> ImportReport:
    """Upsert every good line of a file into one list (a client's, or the global one).

    Every line is one entry, written whole or not at all; the good lines go in
    one transaction with one audit row holding the counts. With ``atomic``, a
    single bad line refuses the file (422, every bad line listed) and nothing
    is written. Importing the same file again changes nothing but
    ``updated_at`` (and answers ``updated`` instead of ``created``).
    """
    moment = now or datetime.now(UTC)
    parsed = parse_import(text, form, now=moment)
    if atomic and parsed.errors:
        raise InvalidRequest(
            f"{len(parsed.errors)} of {parsed.received} lines are not valid entries; "
            "with atomic=true nothing was imported",
            details=[error.detail() for error in parsed.errors[:MAX_REPORTED_ERRORS]],
        )
    entries = [
        Suppression(
            address=row.address,
            reason=row.reason,
            client_id=client_id,
            expires_at=row.expires_at,
            source=source,
            note=row.note,
        )
        for row in parsed.rows
    ]
    with uow:
        if client_id is not None and uow.clients.get(client_id) is None:
            raise InvalidRequest(
                f"no client with id '{client_id}'",
                details=[{"field": "client_id", "message": "unknown client"}],
            )
        created, updated = uow.suppressions.upsert_many(entries) if entries else (0, 0)
        report = ImportReport(
            received=parsed.received,
            created=created,
            updated=updated,
            duplicates=parsed.duplicates,
            errors=parsed.errors,
            written=True,
        )
        uow.audit.append(
            AuditEntry(
                actor=actor.name,
                action="suppression.import",
                target_type="suppression_list",
                target_id=str(client_id) if client_id else "global",
                before=None,
                after={
                    "client_id": str(client_id) if client_id else None,
                    "format": form.value,
                    "received": report.received,
                    "created": created,
                    "updated": updated,
                    "duplicates": report.duplicates,
                    "failed": report.failed,
                    "atomic": atomic,
                },
                source_ip=actor.source_ip,
            )
        )
        uow.commit()
    return report


# An export answer is one Lambda response (6 MB at most): bounded in rows and
# bytes, with a cursor to the rest.
MAX_EXPORT_ROWS = 10_000
MAX_EXPORT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ExportPage:
    text: str
    rows: int
    next_cursor: str | None


def export_suppressions(
    uow: UnitOfWork,
    where: SuppressionFilter,
    form: FileFormat,
    fields: Sequence[str],
    *,
    cursor: str | None,
    max_rows: int = MAX_EXPORT_ROWS,
    max_bytes: int = MAX_EXPORT_BYTES,
    now: datetime | None = None,
) -> ExportPage:
    """One page of a list as a whole file (a CSV page has its header): oldest entry first."""
    after_id = _suppression_cursor(cursor)
    moment = now or datetime.now(UTC)
    header = export_header(form, fields)
    parts = [header]
    size = len(header.encode())
    rows = 0
    next_cursor: str | None = None
    with uow:
        while next_cursor is None:
            want = min(MAX_PAGE, max_rows - rows)
            batch = uow.suppressions.list(where, now=moment, after_id=after_id, limit=want + 1)
            for entry in batch[:want]:
                line = export_line(entry, form, fields)
                if rows and size + len(line.encode()) > max_bytes:
                    next_cursor = str(after_id)
                    break
                parts.append(line)
                size += len(line.encode())
                rows += 1
                after_id = entry.id
            else:
                if len(batch) <= want:
                    break  # the end of the list
                if rows >= max_rows:
                    next_cursor = str(after_id)
    return ExportPage(text="".join(parts), rows=rows, next_cursor=next_cursor)
