"""``/v1/smtp-configs``: a client's own SMTP relays (issue 20, item 4), scope ``smtp:manage``.

The password goes in and never comes out: views say ``password_set`` only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from mailroom.bootstrap import Services
from mailroom.domain.errors import SmtpConfigNotFound
from mailroom.domain.smtp_configs import (
    MAX_POOL_SIZE,
    MAX_TIMEOUT_SECONDS,
    NAME_PATTERN,
    RelaySecurity,
    SmtpConfig,
)
from mailroom.domain.tenancy import Actor, Scope
from mailroom.domain.throttling import DomainGroup
from mailroom.entrypoints.client_gate import source_ip_of
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.services import smtp_configs as relays

ServicesProvider = Callable[[], Services]
CONFIG_ID = Path(max_length=64, description="The SMTP configuration's id (a UUID).")
TAGS = ["smtp configurations"]
MAX_PER_MINUTE = 1_000_000

Ceilings = dict[DomainGroup, Annotated[int, Field(ge=1, le=MAX_PER_MINUTE)]]


class _RelayFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    security: RelaySecurity = Field(
        default=RelaySecurity.STARTTLS,
        description="none, starttls (upgrade after EHLO) or tls (implicit TLS, port 465)",
    )
    username: str | None = Field(default=None, min_length=1, max_length=255)
    # SecretStr: the request model is printed by Powertools' debug logging.
    password: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Stored sealed (AES-256-GCM); never returned. Needs a username.",
    )
    pool_size: int = Field(default=1, ge=1, le=MAX_POOL_SIZE)
    timeout_seconds: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT_SECONDS)
    active: bool = True
    default: bool = Field(
        default=False,
        description="The client's mail goes through this relay unless a send names another.",
    )
    throttle_per_minute: Ceilings = Field(
        default_factory=dict,
        description="Per-minute ceilings per recipient domain group through this relay "
        "(gmail, outlook, yahoo, other); the service's THROTTLE_PER_MINUTE otherwise.",
    )


class CreateSmtpConfigRequest(_RelayFields):
    name: str = Field(pattern=NAME_PATTERN, description="Unique per client; sends may name it.")
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)


class UpdateSmtpConfigRequest(BaseModel):
    """Only the fields given change; ``password: null`` removes the password."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    host: str | None = Field(default=None, min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: RelaySecurity | None = None
    username: str | None = Field(default=None, min_length=1, max_length=255)
    password: SecretStr | None = Field(default=None, min_length=1, max_length=1024)
    pool_size: int | None = Field(default=None, ge=1, le=MAX_POOL_SIZE)
    timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS)
    active: bool | None = None
    default: bool | None = None
    throttle_per_minute: Ceilings | None = None


class SmtpConfigView(BaseModel):
    id: uuid.UUID
    name: str
    host: str
    port: int
    security: RelaySecurity
    username: str | None
    password_set: bool = Field(description="The password itself is never returned")
    pool_size: int
    timeout_seconds: float
    active: bool
    default: bool
    throttle_per_minute: dict[str, int]
    created_at: datetime | None
    updated_at: datetime | None


class SmtpConfigList(BaseModel):
    smtp_configs: list[SmtpConfigView]


class ProbeStepView(BaseModel):
    step: str = Field(description="connect, ehlo, starttls or auth")
    ok: bool
    detail: str


class SmtpTestResult(BaseModel):
    ok: bool = Field(description="Every step succeeded")
    failed_step: str | None = Field(description="The first step that failed")
    steps: list[ProbeStepView]


def config_view(config: SmtpConfig) -> SmtpConfigView:
    return SmtpConfigView(
        id=config.id,
        name=config.name,
        host=config.host,
        port=config.port,
        security=config.security,
        username=config.username,
        password_set=config.sealed_password is not None,
        pool_size=config.pool_size,
        timeout_seconds=config.timeout_seconds,
        active=config.active,
        default=config.is_default,
        throttle_per_minute=dict(config.throttle_per_minute),
        created_at=config.created_at,
        updated_at=config.updated_at,
    )


def parse_config_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise SmtpConfigNotFound(f"no SMTP configuration with id {raw!r}") from None


def _clear(password: SecretStr | None) -> str | None:
    return None if password is None else password.get_secret_value()


def _ceilings(value: Ceilings | None) -> dict[str, int] | None:
    return None if value is None else {group.value: count for group, count in value.items()}


def _create_fields(request: CreateSmtpConfigRequest) -> relays.RelayFields:
    return relays.RelayFields(
        name=request.name,
        host=request.host,
        port=request.port,
        security=request.security,
        username=request.username,
        password=_clear(request.password),
        pool_size=request.pool_size,
        timeout_seconds=request.timeout_seconds,
        active=request.active,
        is_default=request.default,
        throttle_per_minute=_ceilings(request.throttle_per_minute) or {},
    )


def _update_fields(request: UpdateSmtpConfigRequest) -> relays.RelayFields:
    given = request.model_fields_set
    keep = relays.KEEP

    def pick(name: str) -> object:
        return getattr(request, name) if name in given else keep

    # Fields that cannot be null: a null is refused rather than stored.
    for name in ("name", "host", "port", "security", "pool_size", "timeout_seconds", "active"):
        if name in given and getattr(request, name) is None:
            from mailroom.domain.errors import InvalidRequest

            raise InvalidRequest(
                f"{name} cannot be null", details=[{"field": name, "message": "cannot be null"}]
            )
    return relays.RelayFields(
        name=pick("name"),  # type: ignore[arg-type]
        host=pick("host"),  # type: ignore[arg-type]
        port=pick("port"),  # type: ignore[arg-type]
        security=pick("security"),  # type: ignore[arg-type]
        username=pick("username"),  # type: ignore[arg-type]
        password=_clear(request.password) if "password" in given else keep,
        pool_size=pick("pool_size"),  # type: ignore[arg-type]
        timeout_seconds=pick("timeout_seconds"),  # type: ignore[arg-type]
        active=pick("active"),  # type: ignore[arg-type]
        is_default=bool(request.default) if "default" in given else keep,
        throttle_per_minute=_ceilings(request.throttle_per_minute) or {}
        if "throttle_per_minute" in given
        else keep,
    )


_NOT_FOUND = {404: "smtp_config_not_found: no such SMTP configuration for this client"}
_WRITE_ERRORS = {
    409: "smtp_config_name_taken: the client has one of that name",
    422: "validation_error (a host that is not a host name, a password without a username...)",
    503: "secrets_not_configured: SECRETS_ENCRYPTION_KEYS is unset (passwords are sealed)",
}


def smtp_config_routes(services: ServicesProvider) -> Router:
    from mailroom.entrypoints.api import caller_of

    router = Router()
    security = client_key(Scope.SMTP_MANAGE)

    def me() -> tuple[Services, uuid.UUID, Actor]:
        active = services()
        caller = caller_of(router, active, Scope.SMTP_MANAGE)
        source_ip = source_ip_of(router.current_event.raw_event)
        return active, caller.client.id, Actor(f"key:{caller.key_id}", source_ip)

    @router.post(
        "/v1/smtp-configs",
        status_code=201,
        summary="Add an SMTP relay",
        description="Sends naming it (`smtp_config`), or all the client's mail when it is "
        "the default, go out through it, behind a circuit breaker of its own.",
        responses=answers(201, "Created", SmtpConfigView, errors=_WRITE_ERRORS),
        tags=TAGS,
        security=security,
    )
    def create(request: Annotated[CreateSmtpConfigRequest, Body()]) -> Response[str]:
        active, client_id, actor = me()
        config = relays.create_config(
            active.uow(),
            active.settings.secret_keyring,
            client_id,
            _create_fields(request),
            actor=actor,
        )
        logger.info("smtp config created", extra={"smtp_config_id": str(config.id)})
        return Response(
            status_code=201,
            content_type=content_types.APPLICATION_JSON,
            body=config_view(config).model_dump_json(),
        )

    @router.get(
        "/v1/smtp-configs",
        summary="The client's SMTP relays",
        responses=answers(200, "The relays", SmtpConfigList),
        tags=TAGS,
        security=security,
    )
    def list_own() -> SmtpConfigList:
        active, client_id, _ = me()
        found = relays.list_configs(active.uow(), client_id)
        return SmtpConfigList(smtp_configs=[config_view(c) for c in found])

    @router.get(
        "/v1/smtp-configs/<config_id>",
        summary="One SMTP relay",
        responses=answers(200, "The relay", SmtpConfigView, errors=_NOT_FOUND),
        tags=TAGS,
        security=security,
    )
    def get_one(config_id: Annotated[str, CONFIG_ID]) -> SmtpConfigView:
        active, client_id, _ = me()
        return config_view(relays.get_config(active.uow(), client_id, parse_config_id(config_id)))

    @router.patch(
        "/v1/smtp-configs/<config_id>",
        summary="Change an SMTP relay",
        description="Only the fields given change; `password: null` removes the password.",
        responses=answers(200, "The relay", SmtpConfigView, errors={**_NOT_FOUND, **_WRITE_ERRORS}),
        tags=TAGS,
        security=security,
    )
    def update(
        config_id: Annotated[str, CONFIG_ID],
        request: Annotated[UpdateSmtpConfigRequest, Body()],
    ) -> SmtpConfigView:
        active, client_id, actor = me()
        config = relays.update_config(
            active.uow(),
            active.settings.secret_keyring,
            client_id,
            parse_config_id(config_id),
            _update_fields(request),
            actor=actor,
        )
        return config_view(config)

    @router.delete(
        "/v1/smtp-configs/<config_id>",
        summary="Remove an SMTP relay",
        description="Mail already accepted for it goes through the provider chain instead.",
        responses=answers(200, "The relay, removed", SmtpConfigView, errors=_NOT_FOUND),
        tags=TAGS,
        security=security,
    )
    def delete(config_id: Annotated[str, CONFIG_ID]) -> SmtpConfigView:
        active, client_id, actor = me()
        config = relays.delete_config(
            active.uow(), client_id, parse_config_id(config_id), actor=actor
        )
        return config_view(config)

    @router.post(
        "/v1/smtp-configs/<config_id>/test",
        summary="Try the relay: connect, EHLO, STARTTLS, AUTH",
        description="Reports each step and the first that failed; no mail is sent. "
        "A relay that cannot be reached or refuses the credentials is a 200 with "
        "`ok: false`: the test ran, the relay failed it.",
        responses=answers(
            200,
            "Each step's outcome",
            SmtpTestResult,
            errors={**_NOT_FOUND, 503: "secrets_not_configured"},
        ),
        tags=TAGS,
        security=security,
    )
    def test(config_id: Annotated[str, CONFIG_ID]) -> SmtpTestResult:
        active, client_id, _ = me()
        config, steps = relays.probe_config(
            active.uow(),
            active.settings.secret_keyring,
            client_id,
            parse_config_id(config_id),
            allow_internal=active.settings.smtp_relay_allow_internal_hosts,
        )
        failed = next((step.step for step in steps if not step.ok), None)
        logger.info(
            "smtp config tested",
            extra={"smtp_config_id": str(config.id), "failed_step": failed},
        )
        return SmtpTestResult(
            ok=failed is None,
            failed_step=failed,
            steps=[ProbeStepView(step=s.step, ok=s.ok, detail=s.detail) for s in steps],
        )

    return router


class ResealResult(BaseModel):
    resealed: int = Field(description="Passwords sealed again under the current key")
    current_key: str = Field(description="The key id they are sealed under now")


def admin_smtp_config_routes(services: ServicesProvider) -> Router:
    """``POST /admin/smtp-configs/reseal``: the key rotation's second step, for every client."""
    from mailroom.entrypoints.admin import ADMIN_SECURITY, require_admin

    router = Router()

    @router.post(
        "/admin/smtp-configs/reseal",
        summary="Seal every SMTP password again under the current key",
        description=(
            "Rotation: list the new key first in SECRETS_ENCRYPTION_KEYS (the old one "
            "after it), deploy, call this, then drop the old key. Idempotent."
        ),
        responses=answers(
            200, "How many were resealed", ResealResult, errors={503: "secrets_not_configured"}
        ),
        tags=["admin: smtp configurations"],
        security=ADMIN_SECURITY,
    )
    def reseal() -> ResealResult:
        active = services()
        actor = require_admin(router, active)
        keyring = active.settings.secret_keyring
        count = relays.reseal_all(active.uow(), keyring, actor=actor)
        logger.info("smtp passwords resealed", extra={"count": count, "actor": actor.name})
        return ResealResult(resealed=count, current_key=keyring.current if keyring else "")

    return router
