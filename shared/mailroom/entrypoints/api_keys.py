"""API key routes: a client managing its own keys (/v1, scope admin) and operators (/admin).

A secret and its Bearer token appear in exactly two answers, creation and
rotation, and in no log line; listings show the public key id and a mask.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from pydantic import BaseModel, ConfigDict, Field

from mailroom.bootstrap import Services
from mailroom.domain.api_keys import MAX_ACTIVE_KEYS_PER_CLIENT, MAX_ALLOWLIST_ENTRIES, ApiKey
from mailroom.domain.tenancy import Actor, KeyKind, Scope
from mailroom.entrypoints.client_gate import source_ip_of
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.services import api_keys, clients

ServicesProvider = Callable[[], Services]
KEY_ID = Path(max_length=64, description="The key id (mr_live_… or mr_test_…).")
TAGS = ["api keys"]
ADMIN_TAGS = ["admin: clients"]


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Annotated[str, Field(max_length=64)]] = Field(
        min_length=1,
        max_length=len(Scope),
        description="Scope names: " + ", ".join(s.value for s in Scope) + " (admin: all).",
    )
    mode: KeyKind = Field(default=KeyKind.LIVE, description="live, or test (mr_test_).")
    expires_at: datetime | None = Field(
        default=None, description="With a time zone, in the future; null: never."
    )
    ip_allowlist: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=MAX_ALLOWLIST_ENTRIES,
        description="IPv4/IPv6 CIDRs the key may be used from; empty: anywhere. "
        "IPv4-mapped IPv6 callers match IPv4 entries.",
    )
    rate_limit: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Requests per minute for this key alone."
    )


class RotateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int | None = Field(
        default=None,
        ge=0,
        le=30 * 86_400,
        description="How long the old secret keeps working; default SECRET_ROTATION_GRACE_SECONDS.",
    )


class KeyView(BaseModel):
    id: str = Field(description="The public key id: X-Api-Key, and inside the Bearer token.")
    key_masked: str
    name: str
    scopes: list[Scope]
    mode: KeyKind
    status: str = Field(description="active, expired or revoked")
    expires_at: datetime | None
    ip_allowlist: list[str]
    rate_limit: int | None = Field(description="Requests per minute for this key; null: none.")
    previous_secret_expires_at: datetime | None = Field(
        description="Until then the secret replaced by the last rotation still works."
    )
    last_used_at: datetime | None = Field(description="Approximate (every few minutes).")
    revoked_at: datetime | None
    created_at: datetime | None


class IssuedKeyView(KeyView):
    key: str = Field(description="The key id again: send it as X-Api-Key.")
    secret: str = Field(description="Shown this once; only its argon2id hash is kept.")
    token: str = Field(description="Key and secret as one Bearer token; shown this once.")


class KeyList(BaseModel):
    keys: list[KeyView] = Field(description=f"Newest first, at most {api_keys.LIST_LIMIT}.")
    max_active_keys: int = MAX_ACTIVE_KEYS_PER_CLIENT


def key_view(key: ApiKey) -> KeyView:
    if key.revoked_at is not None:
        state = "revoked"
    elif key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        state = "expired"
    else:
        state = "active"
    return KeyView(
        id=key.id,
        key_masked=key.masked,
        name=key.name,
        scopes=sorted(key.scopes),
        mode=key.mode,
        status=state,
        expires_at=key.expires_at,
        ip_allowlist=[str(network) for network in key.ip_allowlist],
        rate_limit=key.rate_limit,
        previous_secret_expires_at=key.previous_secret_expires_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
        created_at=key.created_at,
    )


def _issued(issued: api_keys.IssuedKey, status_code: int) -> Response[str]:
    view = IssuedKeyView(
        **key_view(issued.key).model_dump(),
        key=issued.key.id,
        secret=issued.secret,
        token=issued.token,
    )
    return Response(
        status_code=status_code,
        content_type=content_types.APPLICATION_JSON,
        body=view.model_dump_json(),
        # Never stored by a cache on the way: the answer holds a secret.
        headers={"Cache-Control": "no-store"},
    )


def _spec(request: CreateKeyRequest) -> api_keys.KeySpec:
    return api_keys.KeySpec(
        name=request.name,
        scopes=request.scopes,
        mode=request.mode,
        expires_at=request.expires_at,
        ip_allowlist=request.ip_allowlist,
        rate_limit=request.rate_limit,
    )


def _create(
    services: Services, client_id: uuid.UUID, request: CreateKeyRequest, actor: Actor
) -> Response[str]:
    issued = api_keys.issue_key(
        services.uow(), services.hasher, client_id, _spec(request), actor=actor
    )
    logger.info("api key created", extra={"key_id": issued.key.id})
    return _issued(issued, 201)


def _revoke(services: Services, client_id: uuid.UUID, key_id: str, actor: Actor) -> KeyView:
    key = api_keys.revoke_key(
        services.uow(), services.credential_versions, client_id, key_id, actor=actor
    )
    logger.info("api key revoked", extra={"key_id": key.id})
    return key_view(key)


def _rotate(
    services: Services,
    client_id: uuid.UUID,
    key_id: str,
    request: RotateKeyRequest | None,
    actor: Actor,
) -> Response[str]:
    issued = api_keys.rotate_key(
        services.uow(),
        services.hasher,
        services.credential_versions,
        client_id,
        key_id,
        grace=_grace(services, request),
        actor=actor,
    )
    logger.info("api key rotated", extra={"key_id": issued.key.id})
    return _issued(issued, 200)


def _grace(services: Services, request: RotateKeyRequest | None) -> timedelta:
    seconds = request.grace_seconds if request else None
    if seconds is None:
        seconds = services.settings.secret_rotation_grace_seconds
    return timedelta(seconds=seconds)


_NOT_FOUND = {404: "api_key_not_found: no such key for this client"}
_CREATE_ERRORS = {
    409: f"key_limit_reached: already {MAX_ACTIVE_KEYS_PER_CLIENT} active keys",
    422: (
        "validation_error, unknown_scope (a scope name we do not know), invalid_cidr "
        "(an allowlist entry that does not parse)"
    ),
}


def api_key_routes(services: ServicesProvider) -> Router:
    """``/v1/api-keys``: a client's own keys, with a key that holds scope ``admin``."""
    from mailroom.entrypoints.api import caller_of

    router = Router()

    def me() -> tuple[Services, uuid.UUID, Actor]:
        active = services()
        caller = caller_of(router, active, Scope.ADMIN)
        source_ip = source_ip_of(router.current_event.raw_event)
        return active, caller.client.id, Actor(f"key:{caller.key_id}", source_ip)

    @router.post(
        "/v1/api-keys",
        status_code=201,
        summary="Create an API key",
        description=(
            "Answers the key id, its secret and the Bearer token once; only the "
            f"secret's hash is kept. At most {MAX_ACTIVE_KEYS_PER_CLIENT} active keys "
            "per client."
        ),
        responses=answers(
            201, "Created; the answer holds the secret", IssuedKeyView, errors=_CREATE_ERRORS
        ),
        tags=TAGS,
        security=client_key(Scope.ADMIN),
    )
    def create(request: Annotated[CreateKeyRequest, Body()]) -> Response[str]:
        active, client_id, actor = me()
        return _create(active, client_id, request, actor)

    @router.get(
        "/v1/api-keys",
        summary="The client's API keys (never a secret)",
        responses=answers(200, "The keys, masked", KeyList),
        tags=TAGS,
        security=client_key(Scope.ADMIN),
    )
    def list_own() -> KeyList:
        active, client_id, _ = me()
        return KeyList(keys=[key_view(k) for k in api_keys.list_keys(active.uow(), client_id)])

    @router.delete(
        "/v1/api-keys/<key_id>",
        summary="Revoke an API key",
        description="Refused (401 api_key_revoked) on every instance from its next request.",
        responses=answers(200, "The key, revoked", KeyView, errors=_NOT_FOUND),
        tags=TAGS,
        security=client_key(Scope.ADMIN),
    )
    def revoke(key_id: Annotated[str, KEY_ID]) -> KeyView:
        active, client_id, actor = me()
        return _revoke(active, client_id, key_id, actor)

    @router.post(
        "/v1/api-keys/<key_id>/rotate",
        summary="Give an API key a new secret",
        description="The old secret keeps working for the grace period.",
        responses=answers(200, "The new secret, shown once", IssuedKeyView, errors=_NOT_FOUND),
        tags=TAGS,
        security=client_key(Scope.ADMIN),
    )
    def rotate(
        key_id: Annotated[str, KEY_ID],
        request: Annotated[RotateKeyRequest | None, Body()] = None,
    ) -> Response[str]:
        active, client_id, actor = me()
        return _rotate(active, client_id, key_id, request, actor)

    return router


def admin_key_routes(services: ServicesProvider) -> Router:
    """``/admin/clients/{client_ref}/api-keys``: the same operations for operators."""
    from mailroom.entrypoints.admin import ADMIN_SECURITY, require_admin

    router = Router()

    def admin(client_ref: str) -> tuple[Services, uuid.UUID, Actor]:
        active = services()
        actor = require_admin(router, active)
        return active, clients.find_client(active.uow(), client_ref).id, actor

    @router.post(
        "/admin/clients/<client_ref>/api-keys",
        status_code=201,
        summary="Create an API key for a client",
        responses=answers(
            201,
            "Created; the answer holds the secret",
            IssuedKeyView,
            errors={**_CREATE_ERRORS, 404: "client_not_found"},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def create(
        client_ref: Annotated[str, Path()], request: Annotated[CreateKeyRequest, Body()]
    ) -> Response[str]:
        active, client_id, actor = admin(client_ref)
        return _create(active, client_id, request, actor)

    @router.get(
        "/admin/clients/<client_ref>/api-keys",
        summary="A client's API keys (never a secret)",
        responses=answers(200, "The keys, masked", KeyList, errors={404: "client_not_found"}),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def list_all(client_ref: Annotated[str, Path()]) -> KeyList:
        active, client_id, _ = admin(client_ref)
        return KeyList(keys=[key_view(k) for k in api_keys.list_keys(active.uow(), client_id)])

    @router.delete(
        "/admin/clients/<client_ref>/api-keys/<key_id>",
        summary="Revoke a client's API key",
        responses=answers(
            200, "The key, revoked", KeyView, errors={404: "client_not_found, api_key_not_found"}
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def revoke(client_ref: Annotated[str, Path()], key_id: Annotated[str, KEY_ID]) -> KeyView:
        active, client_id, actor = admin(client_ref)
        return _revoke(active, client_id, key_id, actor)

    @router.post(
        "/admin/clients/<client_ref>/api-keys/<key_id>/rotate",
        summary="Give a client's API key a new secret",
        responses=answers(
            200,
            "The new secret, shown once",
            IssuedKeyView,
            errors={404: "client_not_found, api_key_not_found"},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def rotate(
        client_ref: Annotated[str, Path()],
        key_id: Annotated[str, KEY_ID],
        request: Annotated[RotateKeyRequest | None, Body()] = None,
    ) -> Response[str]:
        active, client_id, actor = admin(client_ref)
        return _rotate(active, client_id, key_id, request, actor)

    return router
