"""Accepting a send request: validate, write the row, queue the id."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailroom.adapters import tracing
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.queue import MessageQueue
from mailroom.adapters.templates import TemplateRenderer, TemplateStore, subject_too_long
from mailroom.domain.addresses import SANDBOX_DOMAIN, SPECIAL_USE_REFUSAL
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import DependencyUnavailable, EnqueueFailed, InvalidRequest
from mailroom.domain.mime import subject_fits
from mailroom.domain.model import Client, EventType, Message, MessageStatus
from mailroom.domain.sandbox import sandbox_fields, simulated_suppressions
from mailroom.domain.tenancy import KeyKind
from mailroom.services import suppression
from mailroom.services.templates import check_props


@dataclass(frozen=True, slots=True)
class SendLimits:
    max_recipients: int
    default_from: str


def accept_message(
    uow: UnitOfWork,
    queue: MessageQueue,
    templates: TemplateStore,
    limits: SendLimits,
    *,
    client: Client,
    request: SendRequest,
    trace_id: str,
    renderer: TemplateRenderer,
    reserve_quota: Callable[[], None] | None = None,
    on_accepted: Callable[[UnitOfWork, Message], None] | None = None,
    mode: KeyKind = KeyKind.LIVE,
) -> Message:
    """Store the message as ``queued`` and put it on the send queue.

    ``reserve_quota`` runs once the request is known to be valid, just before
    the row is written; it raises (QuotaExceeded) to refuse the message.
    ``on_accepted`` runs inside the transaction that writes the row (the
    Idempotency-Key is completed there, so key and row commit together).

    The row is committed before the queue is told, so the worker always finds
    it. If the queue then refuses, the row is marked ``failed`` with the reason
    and the caller gets 503: never a row that claims to be queued but is not.
    A crash between the two leaves a ``queued`` row with no queue message; the
    reconciler of the reliability issue re-enqueues those.

    In test ``mode`` (issue 15) the row is flagged and the worker hands it to
    the sandbox provider; addresses at sim.mailroom.invalid are accepted
    (a live caller gets the 422 any special-use domain gets), and
    ``suppressed@`` ones are screened as if on the suppression list. The
    caller passes no ``reserve_quota`` for test sends: they are not charged.
    """
    test = mode is KeyKind.TEST
    if not test:
        _refuse_sandbox_addresses(request)
    if request.recipient_count > limits.max_recipients:
        raise InvalidRequest(
            f"at most {limits.max_recipients} recipients (to, cc and bcc together)",
            details=[{"field": "to", "message": "too many recipients"}],
        )
    if request.subject and not subject_fits(request.subject):
        raise subject_too_long(request.subject)
    # Before anything is written: UnknownTemplate, then InvalidProps (schema.json)
    # and MissingProp or another RenderError from a trial render, all 422.
    # The template is the one this client may use: another client's of that
    # name is not found (issue 15).
    with tracing.span("api.validate"):
        source = templates.get(request.template, request.template_version, client_id=client.id)
        check_props(renderer, source, request.props)
    message = Message(
        id=uuid.uuid4(),
        client_id=client.id,
        trace_id=trace_id,
        template_name=request.template,
        # The uploaded version the trial render checked, and whose it is: the
        # worker renders exactly that, whatever is uploaded in between.
        template_version=source.version,
        template_shared=source.shared,
        from_address=request.from_ or limits.default_from,
        to=list(request.to),
        cc=list(request.cc),
        bcc=list(request.bcc),
        reply_to=request.reply_to,
        subject=request.subject,
        props=request.props,
        metadata=dict(request.metadata),
        is_test=test,
    )
    detail: dict[str, object] = {"trace_id": trace_id}
    with uow:
        # QuotaExceeded here leaves nothing written. Should every recipient
        # turn out suppressed, RecipientsSuppressed is raised below and the
        # caller's QuotaCharge gives the charge back.
        if reserve_quota is not None:
            reserve_quota()
        # One statement checks the recipients against suppressions and, if
        # none is suppressed (the common case), writes the row, its event and
        # its recipients (issue 8: the check was a round trip of its own).
        simulated = simulated_suppressions(message.envelope_recipients, client.id) if test else []
        if simulated:
            # Test mode's suppressed@: screened as a real entry would be, with
            # the client's real (and test) entries beside it.
            rows = suppression.recipient_rows(message)
            active = [
                *uow.suppressions.active_for(
                    client.id,
                    sorted({address for address, _ in rows}),
                    datetime.now(UTC),
                    include_test=True,
                ),
                *simulated,
            ]
        else:
            with tracing.span("api.insert"):
                active = uow.add_accepted_unless_suppressed(
                    message, detail, suppression.recipient_rows(message)
                )
        screening = suppression.screening_of(active, message.to, message.cc, message.bcc)
        message.to, message.cc, message.bcc = screening.to, screening.cc, screening.bcc
        if active and not screening.refused:
            # Some recipients were dropped: the rest are written, with why.
            uow.add_accepted(message, detail, suppression.recipient_rows(message))
            suppression.record_dropped(uow, message, screening)
        if not screening.refused:
            if on_accepted is not None:
                on_accepted(uow, message)
            uow.commit()
    if screening.refused:
        suppression.refuse(uow, message, screening)  # raises RecipientsSuppressed

    try:
        queue.enqueue(message.id, trace_id)
    except DependencyUnavailable as error:
        message.status = MessageStatus.FAILED
        message.last_error = f"enqueue_failed: {error.message}"
        with uow:
            uow.messages.save_outcome(message)
            uow.messages.append_event(
                message.id, EventType.ENQUEUE_FAILED, {"error": error.message}
            )
            uow.commit()
        raise EnqueueFailed(
            "the message could not be queued and was not sent; it is marked failed, try again",
            details=[{"message_id": str(message.id)}],
        ) from error
    return message


def _refuse_sandbox_addresses(request: SendRequest) -> None:
    """A live caller's sim.mailroom.invalid address: the 422 of any special-use domain."""
    # The validator wrote the domain in lower case: one substring test per
    # address is all a live send pays (issue 15 keeps its cost flat).
    values = (request.from_ or "", *request.to, *request.cc, *request.bcc, *request.reply_to)
    if not any(SANDBOX_DOMAIN in value for value in values):
        return
    fields = [
        *((("from", request.from_),) if request.from_ else ()),
        *((f"to.{i}", value) for i, value in enumerate(request.to)),
        *((f"cc.{i}", value) for i, value in enumerate(request.cc)),
        *((f"bcc.{i}", value) for i, value in enumerate(request.bcc)),
        *((f"reply_to.{i}", value) for i, value in enumerate(request.reply_to)),
    ]
    refused = sandbox_fields(fields)
    if not refused:
        return
    reason = f"address is not a valid email address: {SPECIAL_USE_REFUSAL}"
    raise InvalidRequest(
        f"{refused[0][0]}: {reason}",
        details=[
            {"field": field, "type": "validation_error", "message": reason} for field, _ in refused
        ],
    )
