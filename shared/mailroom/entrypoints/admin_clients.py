"""Admin routes for API clients, their quotas, and the audit log.

A client is addressed by its id or its API key. The secret appears in exactly
two answers, creation and rotation, and in no log line.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from mailroom.bootstrap import Services
from mailroom.domain.errors import DependencyUnavailable, InvalidRequest
from mailroom.domain.model import Client, ClientStatus
from mailroom.domain.tenancy import Actor, KeyKind, QuotaPeriod
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers
from mailroom.services import clients, quotas

ServicesProvider = Callable[[], Services]
PERIOD_PATTERN = r"^\d{4}-\d{2}$"
_CLIENT_NOT_FOUND = {404: "client_not_found: no client with that id or API key"}


class UsageView(BaseModel):
    period: str = Field(description="The calendar month in UTC, YYYY-MM.")
    used: int
    limit: int
    remaining: int
    resets_at: datetime


class ClientView(BaseModel):
    id: uuid.UUID
    name: str
    api_key: str = Field(
        description="The key the client was created with (scope admin); "
        "GET /admin/clients/{id}/api-keys lists all of them."
    )
    status: ClientStatus
    rate_limit: int = Field(description="Requests per minute.")
    quota_limit: int = Field(description="Messages per calendar month (UTC).")
    daily_limit: int | None = Field(description="Messages per UTC day; None: no daily limit.")
    provider_order: list[str] | None = Field(description="None: the service-wide order.")
    sandbox_mode: bool = Field(
        default=False,
        description="Every key of the client acts in test mode: nothing reaches a provider.",
    )
    created_at: datetime | None
    updated_at: datetime | None
    last_used_at: datetime | None = Field(
        description="When any of its keys was last used. Approximate: written at most "
        "every few minutes per instance."
    )


class ClientDetail(ClientView):
    usage: UsageView | None = Field(description="None when Redis cannot be read.")


class CreatedClient(ClientView):
    api_secret: str = Field(description="Shown this once; only its argon2id hash is kept.")


class RotatedSecret(BaseModel):
    id: uuid.UUID
    api_key: str
    api_secret: str = Field(description="Shown this once.")
    previous_secret_expires_at: datetime | None = Field(
        description="The old secret works until then; None: it stopped at once."
    )


class ClientList(BaseModel):
    clients: list[ClientView]


class CreateClientRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    # Strict, as the document says: JSON true is not the integer 1.
    rate_limit: StrictInt = Field(
        default=600, ge=1, le=1_000_000, description="Requests per minute."
    )
    quota_limit: StrictInt = Field(
        default=100_000, ge=0, le=1_000_000_000, description="Messages per calendar month."
    )
    provider_order: list[str] | None = Field(
        default=None, description="Configured providers in the order to try; null: the default."
    )
    daily_limit: StrictInt | None = Field(
        default=None, ge=0, le=1_000_000_000, description="Messages per UTC day; null: none."
    )
    key_type: KeyKind = Field(
        default=KeyKind.LIVE, description="The mode of the client's first key: live or test."
    )
    sandbox_mode: bool = Field(
        default=False,
        description="Every key of the client acts in test mode: nothing reaches a provider.",
    )


class UpdateClientRequest(BaseModel):
    """Only the fields given change; ``provider_order: null`` goes back to the default order."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    rate_limit: StrictInt | None = Field(default=None, ge=1, le=1_000_000)
    quota_limit: StrictInt | None = Field(default=None, ge=0, le=1_000_000_000)
    daily_limit: StrictInt | None = Field(
        default=None, ge=0, le=1_000_000_000, description="null: no daily limit."
    )
    provider_order: list[str] | None = None
    sandbox_mode: bool | None = Field(
        default=None, description="true: every key of the client acts in test mode."
    )


class RotateSecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: StrictInt | None = Field(
        default=None,
        ge=0,
        le=30 * 86_400,
        description="How long the old secret keeps working; default SECRET_ROTATION_GRACE_SECONDS.",
    )


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client: str | None = Field(default=None, description="Id or API key; every client if absent.")
    period: str | None = Field(
        default=None, pattern=PERIOD_PATTERN, description="YYYY-MM; the current month if absent."
    )


class ReconcileView(BaseModel):
    client_id: uuid.UUID
    period: str
    counter_before: int | None
    counted: int = Field(description="Accepted messages in the messages table.")
    counter_after: int | None
    corrected: bool
    settled: bool = Field(description="False: sends kept moving the counter; run it again.")


class ReconcileList(BaseModel):
    results: list[ReconcileView]


class AuditEntryView(BaseModel):
    seq: int = Field(description="The log's sequence number: the order actions happened in.")
    at: datetime | None = Field(description="When the action's transaction started (may tie).")
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source_ip: str | None


class AuditList(BaseModel):
    entries: list[AuditEntryView]


_NAME_TAKEN = "client_name_taken: another client has this name (compared case-insensitively)"


def client_routes(services: ServicesProvider) -> Router:
    # admin.py lists this router among its own, so its helpers come in here.
    from mailroom.entrypoints.admin import ADMIN_SECURITY, require_admin

    router = Router()

    def admin() -> tuple[Services, Actor]:
        active = services()
        return active, require_admin(router, active)

    @router.post(
        "/admin/clients",
        status_code=201,
        summary="Create a client and its key pair",
        description=(
            "The answer holds the secret; it is never shown again. Names are unique, "
            "compared case-insensitively: a taken one is 409 `client_name_taken`."
        ),
        responses=answers(
            201,
            "Created; the answer holds the secret",
            CreatedClient,
            errors={
                409: _NAME_TAKEN,
                422: "validation_error (an unknown provider, say)",
            },
        ),
        tags=["admin: clients"],
        security=ADMIN_SECURITY,
    )
    def create(request: Annotated[CreateClientRequest, Body()]) -> Response[str]:
        active, actor = admin()
        registered = clients.register_client(
            active.uow(),
            active.hasher,
            name=request.name,
            rate_limit=request.rate_limit,
            quota_limit=request.quota_limit,
            provider_order=request.provider_order,
            known_providers=_known_providers(active),
            kind=request.key_type,
            daily_limit=request.daily_limit,
            actor=actor,
            sandbox_mode=request.sandbox_mode,
        )
        logger.info(
            "client created",
            extra={"client_id": str(registered.client.id), "api_key": registered.api_key},
        )
        view = CreatedClient(
            **_view(registered.client).model_dump(), api_secret=registered.api_secret
        )
        return Response(
            status_code=201,
            content_type=content_types.APPLICATION_JSON,
            body=view.model_dump_json(),
        )

    @router.get(
        "/admin/clients",
        summary="List clients",
        responses=answers(200, "The clients"),
        tags=["admin: clients"],
        security=ADMIN_SECURITY,
    )
    def list_all(status: Annotated[ClientStatus | None, Query()] = None) -> ClientList:
        active, _ = admin()
        return ClientList(clients=[_view(c) for c in clients.list_clients(active.uow(), status)])

    @router.get(
        "/admin/clients/<client_ref>",
        summary="Show a client and this month's quota usage",
        responses=answers(200, "The client", errors=_CLIENT_NOT_FOUND),
        tags=["admin: clients"],
        security=ADMIN_SECURITY,
    )
    def show(client_ref: Annotated[str, Path()]) -> ClientDetail:
        active, _ = admin()
        client = clients.find_client(active.uow(), client_ref)
        return ClientDetail(**_view(client).model_dump(), usage=_usage(active, client))

    @router.patch(
        "/admin/clients/<client_ref>",
        summary="Change a client's name, limits, provider order or sandbox mode",
        description=(
            "Applies to the client's next request on every instance. A name another "
            "client has (in any case) is 409 `client_name_taken`."
        ),
        responses=answers(
            200,
            "The client as changed",
            errors={
                **_CLIENT_NOT_FOUND,
                409: _NAME_TAKEN,
                503: "change_not_propagated: saved, but Redis was not told; retry",
            },
        ),
        tags=["admin: clients"],
        security=ADMIN_SECURITY,
    )
    def update(
        client_ref: Annotated[str, Path()], request: Annotated[UpdateClientRequest, Body()]
    ) -> ClientView:
        active, actor = admin()
        changes = clients.ClientChanges(
            name=request.name,
            rate_limit=request.rate_limit,
            quota_limit=request.quota_limit,
            provider_order=request.provider_order
            if "provider_order" in request.model_fields_set
            else clients.KEEP,
            sandbox_mode=request.sandbox_mode,
            daily_limit=request.daily_limit
            if "daily_limit" in request.model_fields_set
            else clients.KEEP,
        )
        client = clients.update_client(
            active.uow(),
            active.credential_versions,
            client_ref,
            changes,
            known_providers=_known_providers(active),
            actor=actor,
        )
        logger.info("client updated", extra={"client_id": str(client.id)})
        return _view(client)

    @router.post(
        "/admin/clients/<client_ref>/suspend",
        summary="Suspend a client",
        description="Its next request on any instance gets 403 client_suspended.",
        responses=answers(200, "The client, suspended", errors=_CLIENT_NOT_FOUND),
        tags=["admin: clients"],
        security=ADMIN_SECURITY,
    )
    def suspend(client_ref: Annotated[str, Path()]) -> ClientView:
        active, actor = admin()
        client = clients.suspend_client(
            active.uow(), active.credential_versions, client_ref, actor=actor
        )
        logger.info("client suspended", extra={"client_id": str(client.id)})
        return _view(client)

    @router.post(
        "/admin/clients/<client_ref>/reactivate",
        summary="Reactivate a suspended client",
        responses=answers(200, "The client, active", errors=_CLIENT_NOT_FOUND),
        tags=["admin: clients"],
        security=ADMIN_SECURITY,
    )
    def reactivate(client_ref: Annotated[str, Path()]) -> ClientView:
        active, actor = admin()
        client = clients.reactivate_client(
            active.uow(), active.credential_versions, client_ref, actor=actor
        )
        logger.info("client reactivated", extra={"client_id": str(client.id)})
        return _view(client)

    @router.post(
        "/admin/clients/<client_ref>/rotate-secret",
        summary="Give a client's first key a new secret",
        description=(
            "Rotates the key the client was created with (its other keys: "
            "POST /admin/clients/{client_ref}/api-keys/{key_id}/rotate). The old secret "
            "keeps working for the grace period; the new one is shown only here."
        ),
        responses=answers(200, "The new secret", errors=_CLIENT_NOT_FOUND),
        tags=["admin: clients"],
        security=ADMIN_SECURITY,
    )
    def rotate(
        client_ref: Annotated[str, Path()],
        request: Annotated[RotateSecretRequest | None, Body()] = None,
    ) -> RotatedSecret:
        active, actor = admin()
        grace_seconds = request.grace_seconds if request else None
        if grace_seconds is None:
            grace_seconds = active.settings.secret_rotation_grace_seconds
        rotated = clients.rotate_secret(
            active.uow(),
            active.hasher,
            active.credential_versions,
            client_ref,
            grace=timedelta(seconds=grace_seconds),
            actor=actor,
        )
        logger.info(
            "client secret rotated",
            extra={"client_id": str(rotated.client.id), "grace_seconds": grace_seconds},
        )
        return RotatedSecret(
            id=rotated.client.id,
            api_key=rotated.api_key,
            api_secret=rotated.api_secret,
            previous_secret_expires_at=rotated.key.previous_secret_expires_at,
        )

    @router.post(
        "/admin/quota/reconcile",
        summary="Set quota counters to what the messages table says",
        responses=answers(
            200,
            "Each client's counter before and after",
            errors={
                **_CLIENT_NOT_FOUND,
                422: "validation_error: period is not a YYYY-MM month",
            },
        ),
        tags=["admin: clients"],
        security=ADMIN_SECURITY,
    )
    def reconcile(request: Annotated[ReconcileRequest | None, Body()] = None) -> ReconcileList:
        active, actor = admin()
        request = request or ReconcileRequest()
        try:
            period = (
                QuotaPeriod.parse(request.period)
                if request.period
                else QuotaPeriod.containing(datetime.now(UTC))
            )
        except ValueError as error:
            raise InvalidRequest(
                str(error), details=[{"field": "period", "message": str(error)}]
            ) from error
        results = quotas.reconcile_quotas(
            active.quota, active.uow, period, client_ref=request.client, actor=actor
        )
        corrected = [r for r in results if r.corrected]
        logger.info(
            "quota counters reconciled",
            extra={"period": period.label, "clients": len(results), "corrected": len(corrected)},
        )
        return ReconcileList(
            results=[
                ReconcileView(
                    client_id=r.client_id,
                    period=r.period.label,
                    counter_before=r.counter_before,
                    counted=r.counted,
                    counter_after=r.counter_after,
                    corrected=r.corrected,
                    settled=r.settled,
                )
                for r in results
            ]
        )

    @router.get(
        "/admin/audit",
        summary="The admin audit log, in the order the actions happened (oldest first)",
        description=(
            "Without `after`: the last `limit` entries. With `after`: the first `limit` "
            "entries whose `seq` is greater, to read on from the last one seen."
        ),
        responses=answers(200, "The entries"),
        tags=["admin: clients"],
        security=ADMIN_SECURITY,
    )
    def audit(
        target: Annotated[
            str | None,
            Query(max_length=128, description="A target id: client id, address, template..."),
        ] = None,
        after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AuditList:
        active, _ = admin()
        entries = clients.audit_trail(active.uow(), target_id=target, after_seq=after, limit=limit)
        return AuditList(
            entries=[
                AuditEntryView(
                    seq=e.seq or 0,
                    at=e.at,
                    actor=e.actor,
                    action=e.action,
                    target_type=e.target_type,
                    target_id=e.target_id,
                    before=e.before,
                    after=e.after,
                    source_ip=e.source_ip,
                )
                for e in entries
            ]
        )

    return router


def _known_providers(services: Services) -> tuple[str, ...]:
    return services.settings.provider_names


def _usage(services: Services, client: Client) -> UsageView | None:
    period = QuotaPeriod.containing(datetime.now(UTC))
    try:
        usage = quotas.quota_usage(services.quota, services.uow, client, period)
    except DependencyUnavailable:
        logger.warning("quota usage unavailable", extra={"client_id": str(client.id)})
        return None
    return UsageView(
        period=period.label,
        used=usage.used,
        limit=usage.limit,
        remaining=usage.remaining,
        resets_at=period.end,
    )


def _view(client: Client) -> ClientView:
    return ClientView(
        id=client.id,
        name=client.name,
        api_key=client.api_key_prefix,
        status=client.status,
        rate_limit=client.rate_limit,
        quota_limit=client.quota_limit,
        provider_order=client.provider_order,
        sandbox_mode=client.sandbox_mode,
        created_at=client.created_at,
        updated_at=client.updated_at,
        last_used_at=client.last_used_at,
        daily_limit=client.daily_limit,
    )
