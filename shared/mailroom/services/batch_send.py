"""``POST /v1/send/batch`` (issue 17): up to 100 single sends in one synchronous call.

Each item is exactly a ``SendRequest`` and goes through ``prepare_send``, the
one validation every send has. Then, per the caller's validation mode:

- strict (the default): any invalid item refuses the whole batch (422 naming
  every bad item by index) and nothing is written;
- permissive: the valid items are accepted, the others reported by index.

Accepted items are written in one transaction and enqueued ten per call. An
item's own ``idempotency_key`` is held like the ``Idempotency-Key`` of
/v1/send (one namespace per client), so a resent batch accepts each item
once; the call's own key is completed in that same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.inline_content import InlineContentStore
from mailroom.adapters.queue import MessageQueue
from mailroom.adapters.templates import TemplateRenderer, TemplateStore
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import (
    IdempotencyInProgress,
    InvalidRequest,
    MailroomError,
    RenderError,
)
from mailroom.domain.model import Client, Message
from mailroom.domain.tenancy import KeyKind
from mailroom.services import idempotency
from mailroom.services.quotas import BatchQuotaCharge
from mailroom.services.sending import (
    ItemRefusal,
    PreparedSend,
    SendLimits,
    accept_batch,
    prepare_send,
    request_fingerprint,
)

MAX_BATCH_ITEMS = 100
VALIDATION_HEADER = "X-Batch-Validation"


class BatchValidation(StrEnum):
    STRICT = "strict"
    PERMISSIVE = "permissive"


@dataclass(frozen=True, slots=True)
class ItemError:
    index: int
    code: str
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "code": self.code,
            "message": self.message,
            "details": self.details,
        }


@dataclass(slots=True)
class BatchAnswer:
    """``{"data": [{"index", "id", ...}], "errors": [{"index", "code", "message"}]}``."""

    data: list[dict[str, Any]] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    mode: KeyKind = KeyKind.LIVE

    def as_json(self) -> dict[str, Any]:
        return {
            "data": sorted(self.data, key=lambda entry: int(entry["index"])),
            "errors": [e.as_json() for e in sorted(self.errors, key=lambda e: e.index)],
            "mode": self.mode.value,
        }


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What every item of one call shares."""

    client: Client
    mode: KeyKind
    trace_id: str
    validation: BatchValidation
    # SENDER_VERIFICATION's From check for this caller, if any (issue 16).
    check_sender: Callable[[str], None] | None = None
    # A send's ``smtp_config`` to the client's relay id (issue 20).
    resolve_relay: Callable[[str], uuid.UUID] | None = None
    # Issue 20: route the items through the client's queues.
    routing: bool = False


def validate_items(
    templates: TemplateStore,
    renderer: TemplateRenderer,
    limits: SendLimits,
    items: Sequence[Any],
    context: BatchContext,
) -> tuple[list[tuple[int, SendRequest, PreparedSend]], list[ItemError]]:
    """Every item through the single send's validation; the valid ones and the errors by index."""
    valid: list[tuple[int, SendRequest, PreparedSend]] = []
    problems: list[ItemError] = []
    resolve_relay = _remembered(context.resolve_relay)
    for index, raw in enumerate(items):
        try:
            request = SendRequest.model_validate(raw)
        except ValidationError as error:
            problems.append(_validation_error(index, error))
            continue
        try:
            prepared = prepare_send(
                templates,
                renderer,
                limits,
                client=context.client,
                request=request,
                trace_id=context.trace_id,
                mode=context.mode,
                check_sender=context.check_sender,
                resolve_relay=resolve_relay,
            )
        except (InvalidRequest, RenderError) as error:
            # The 422s of one send; anything else (a store down) is the call's 503.
            problems.append(ItemError(index, error.code, error.message, error.details))
            continue
        valid.append((index, request, prepared))
    return valid, problems


def _remembered(
    resolve: Callable[[str], uuid.UUID] | None,
) -> Callable[[str], uuid.UUID] | None:
    """``resolve`` asked once per SMTP configuration name in this call, not once per item.

    Each answer is a database read; a batch's items usually name the same
    relay (issue 17: no per-item repeated lookups). A refusal is not kept:
    each item that names an unknown one gets its own 422.
    """
    if resolve is None:
        return None
    known: dict[str, uuid.UUID] = {}

    def resolve_once(ref: str) -> uuid.UUID:
        if ref not in known:
            known[ref] = resolve(ref)
        return known[ref]

    return resolve_once


def refuse_invalid(problems: list[ItemError], total: int) -> None:
    """Strict validation: 422 naming every bad item; nothing was written."""
    if not problems:
        return
    first = problems[0]
    raise InvalidRequest(
        f"{len(problems)} of {total} items are invalid, nothing was sent; "
        f"item {first.index}: {first.message}",
        details=[problem.as_json() for problem in problems],
    )


def send_batch(
    uow: Callable[[], UnitOfWork],
    queue: MessageQueue,
    templates: TemplateStore,
    renderer: TemplateRenderer,
    limits: SendLimits,
    *,
    items: Sequence[Any],
    context: BatchContext,
    charge: BatchQuotaCharge | None,
    contents: InlineContentStore | None,
    call_key: idempotency.Hold | None = None,
) -> BatchAnswer:
    """Validate, hold item keys, write the accepted items at once, enqueue; the answer.

    ``call_key`` (the Idempotency-Key of the call, held by the caller) is
    completed with the answer in the transaction that writes the rows, or
    released if nothing was written.
    """
    strict = context.validation is BatchValidation.STRICT
    valid, problems = validate_items(templates, renderer, limits, items, context)
    if strict:
        refuse_invalid(problems, len(items))
    answer = BatchAnswer(errors=problems, mode=context.mode)

    holds: dict[int, idempotency.Hold] = {}
    to_accept: list[tuple[int, PreparedSend]] = []
    warnings: dict[int, PreparedSend] = {}
    try:
        for index, request, prepared in valid:
            if request.idempotency_key is not None:
                try:
                    begun = idempotency.begin(
                        uow(),
                        context.client.id,
                        idempotency.validate_key(request.idempotency_key),
                        request_fingerprint(request),
                    )
                except (InvalidRequest, IdempotencyInProgress) as error:
                    answer.errors.append(ItemError(index, error.code, error.message))
                    continue
                if isinstance(begun, idempotency.Replay):
                    answer.data.append(
                        {"index": index, "id": str(begun.message_id), "replayed": True}
                    )
                    continue
                holds[index] = begun
            to_accept.append((index, prepared))
            warnings[index] = prepared
        if strict:
            refuse_invalid([e for e in answer.errors if e not in problems], len(items))

        def on_accepted(
            session: UnitOfWork, accepted: list[tuple[int, Message]], refused: list[ItemRefusal]
        ) -> None:
            for index, message in accepted:
                hold = holds.pop(index, None)
                if hold is not None:
                    entry = {"index": index, "id": str(message.id), "replayed": False}
                    idempotency.complete(session, hold, message.id, entry)
            if call_key is not None and accepted:
                idempotency.complete(
                    session,
                    call_key,
                    accepted[0][1].id,
                    _answer_with(answer, accepted, refused, warnings).as_json(),
                )

        result = accept_batch(
            uow(),
            queue,
            to_accept,
            client=context.client,
            charge=charge,
            all_or_nothing=strict,
            on_accepted=on_accepted,
            contents=contents,
            routing=context.routing,
        )
    except BaseException:
        for hold in holds.values():
            idempotency.release(uow(), hold)
        if call_key is not None:
            idempotency.release(uow(), call_key)
        raise
    # Items refused at writing time (quota, suppression) leave their keys free.
    for hold in holds.values():
        idempotency.release(uow(), hold)
    if call_key is not None and not result.accepted:
        idempotency.release(uow(), call_key)
    return _answer_with(answer, result.accepted, result.refused, warnings)


def _answer_with(
    answer: BatchAnswer,
    accepted: list[tuple[int, Message]],
    refused: list[ItemRefusal],
    prepared: dict[int, PreparedSend],
) -> BatchAnswer:
    data = [
        *answer.data,
        *(
            {
                "index": index,
                "id": str(message.id),
                "status": message.status.value,
                "render_warnings": list(prepared[index].render_warnings),
                "lint_warnings": list(prepared[index].lint_warnings),
            }
            for index, message in accepted
        ),
    ]
    errors = [
        *answer.errors,
        *(_refusal_error(refusal) for refusal in refused),
    ]
    return BatchAnswer(data=data, errors=errors, mode=answer.mode)


def _refusal_error(refusal: ItemRefusal) -> ItemError:
    error: MailroomError = refusal.error
    return ItemError(refusal.index, error.code, error.message, error.details)


def _validation_error(index: int, error: ValidationError) -> ItemError:
    details = [
        {
            "field": ".".join(str(part) for part in problem.get("loc", ())) or "body",
            "type": problem.get("type", "value_error"),
            "message": problem.get("msg", "invalid value"),
        }
        for problem in error.errors(include_url=False, include_input=False)
    ]
    first = details[0] if details else {"field": "body", "message": "invalid"}
    code = (
        "header_injection"
        if any(d["type"] == "header_injection" for d in details)
        else (InvalidRequest.code)
    )
    return ItemError(index, code, f"{first['field']}: {first['message']}", details)
