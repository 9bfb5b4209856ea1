"""GET /admin/inbound: mail the bounce domain received, unmatched and badly signed first in mind."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field

from mailroom.adapters.db.inbound_repositories import InboundRecord
from mailroom.adapters.db.tables import INBOUND_OUTCOMES
from mailroom.bootstrap import Services
from mailroom.domain.errors import InboundMailNotFound
from mailroom.entrypoints.openapi_contract import answers

ServicesProvider = Callable[[], Services]
Outcome = Literal[
    "applied", "unmatched", "bad_signature", "auto_reply", "unrecognised", "unsubscribed"
]
assert set(Outcome.__args__) == set(INBOUND_OUTCOMES)  # type: ignore[attr-defined]


class InboundMailView(BaseModel):
    id: int
    received_at: datetime | None
    outcome: Outcome
    message_id: uuid.UUID | None
    envelope_recipients: list[str]
    sender: str | None
    subject: str | None
    report_format: str
    kind: str
    reports: list[dict[str, Any]]
    raw_truncated: bool
    raw_base64: str | None = Field(
        default=None, description="The stored raw mail (only on GET /admin/inbound/{id})."
    )


class InboundPageView(BaseModel):
    inbound: list[InboundMailView]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page.")


def inbound_routes(services: ServicesProvider) -> Router:
    # admin.py lists this router among its own, so its helpers come in here.
    from mailroom.entrypoints.admin import ADMIN_SECURITY, require_admin

    router = Router()

    @router.get(
        "/admin/inbound",
        summary="Inbound bounce mail, newest first (outcome=unmatched: the review queue)",
        description=(
            "Every mail the bounce domain received and what became of it. `unmatched` "
            "(no VERP address) and `bad_signature` (an HMAC that did not verify) changed "
            "nothing and are kept here for review."
        ),
        responses=answers(200, "One page", errors={422: "validation_error: a bad filter"}),
        tags=["inbound"],
        security=ADMIN_SECURITY,
    )
    def list_inbound(
        outcome: Annotated[Outcome | None, Query()] = None,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> InboundPageView:
        active = services()
        require_admin(router, active)
        with active.uow() as uow:
            records = uow.inbound.recent(outcome, limit + 1, before)
        page = records[:limit]
        return InboundPageView(
            inbound=[_view(record) for record in page],
            next_before=page[-1].id if len(records) > limit and page else None,
        )

    @router.get(
        "/admin/inbound/<inbound_id>",
        summary="One inbound mail, with its raw bytes",
        responses=answers(
            200,
            "The record",
            InboundMailView,
            errors={404: "inbound_mail_not_found", 422: "validation_error: not an id"},
        ),
        tags=["inbound"],
        security=ADMIN_SECURITY,
    )
    def get_inbound(inbound_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> InboundMailView:
        active = services()
        require_admin(router, active)
        with active.uow() as uow:
            record = uow.inbound.get(inbound_id)
        if record is None:
            raise InboundMailNotFound(f"no inbound mail {inbound_id}")
        view = _view(record)
        view.raw_base64 = base64.b64encode(record.raw).decode("ascii")
        return view

    return router


def _view(record: InboundRecord) -> InboundMailView:
    assert record.id is not None
    return InboundMailView(
        id=record.id,
        received_at=record.received_at,
        outcome=record.outcome,  # type: ignore[arg-type]
        message_id=record.message_id,
        envelope_recipients=record.envelope_recipients,
        sender=record.sender,
        subject=record.subject,
        report_format=record.report_format,
        kind=record.kind,
        reports=record.reports,
        raw_truncated=record.raw_truncated,
    )
