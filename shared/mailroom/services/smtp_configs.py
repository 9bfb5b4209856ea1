"""Clients' own SMTP relays: managing them, trying them, choosing one for a send (issue 20).

The password is sealed with the keyring's current key before it is stored
(context ``smtp-password:<id>``, so a sealed value copied into another row
does not open) and opened only by the worker that sends through the relay
and by the test route. It is never returned, and never written to a log or
the audit trail: the audit keeps ``password_set`` only.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.smtp_relay_probe import ProbeStep, probe_relay
from mailroom.domain.errors import (
    InvalidRequest,
    SecretsNotConfigured,
    SmtpConfigNotFound,
    UnknownSmtpConfig,
)
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.domain.smtp_configs import RelaySecurity, SmtpConfig, check_host, sealing_context
from mailroom.domain.tenancy import Actor, AuditEntry

Probe = Callable[..., list[ProbeStep]]


class Keep:
    """A field an update leaves as it is."""


KEEP = Keep()


@dataclass(frozen=True, slots=True)
class RelayFields:
    """What a create or an update gives; KEEP: unchanged (update only)."""

    name: str | Keep = KEEP
    host: str | Keep = KEEP
    port: int | Keep = KEEP
    security: RelaySecurity | Keep = KEEP
    username: str | Keep | None = KEEP
    password: str | Keep | None = KEEP
    pool_size: int | Keep = KEEP
    timeout_seconds: float | Keep = KEEP
    active: bool | Keep = KEEP
    is_default: bool | Keep = KEEP
    throttle_per_minute: dict[str, int] | Keep = KEEP


def _require_keyring(keyring: SecretKeyring | None) -> SecretKeyring:
    if keyring is None:
        raise SecretsNotConfigured(
            "SMTP passwords are stored sealed, and SECRETS_ENCRYPTION_KEYS is not configured"
        )
    return keyring


def create_config(
    uow: UnitOfWork,
    keyring: SecretKeyring | None,
    client_id: uuid.UUID,
    fields: RelayFields,
    *,
    actor: Actor,
) -> SmtpConfig:
    if any(isinstance(value, Keep) for value in (fields.name, fields.host, fields.port)):
        raise InvalidRequest("name, host and port are required")
    assert isinstance(fields.name, str)
    assert isinstance(fields.host, str)
    assert isinstance(fields.port, int)
    config = SmtpConfig(
        id=uuid.uuid4(),
        client_id=client_id,
        name=fields.name,
        host=check_host(fields.host),
        port=fields.port,
    )
    config = _apply(config, fields, keyring)
    with uow:
        if uow.clients.get(client_id) is None:
            raise SmtpConfigNotFound("no such client")
        if config.is_default:
            uow.smtp_configs.clear_default(client_id, config.id)
        uow.smtp_configs.add(config)
        uow.audit.append(_audit(actor, "smtp_config.create", config, None, summary(config)))
        uow.commit()
    return config


def list_configs(uow: UnitOfWork, client_id: uuid.UUID) -> list[SmtpConfig]:
    with uow:
        return uow.smtp_configs.list_for(client_id)


def get_config(uow: UnitOfWork, client_id: uuid.UUID | None, config_id: uuid.UUID) -> SmtpConfig:
    with uow:
        config = uow.smtp_configs.get(config_id, client_id)
    if config is None:
        raise SmtpConfigNotFound("no such SMTP configuration for this client")
    return config


def update_config(
    uow: UnitOfWork,
    keyring: SecretKeyring | None,
    client_id: uuid.UUID,
    config_id: uuid.UUID,
    fields: RelayFields,
    *,
    actor: Actor,
) -> SmtpConfig:
    with uow:
        before = uow.smtp_configs.get(config_id, client_id)
        if before is None:
            raise SmtpConfigNotFound("no such SMTP configuration for this client")
        after = _apply(replace(before), fields, keyring)
        if after.is_default and not before.is_default:
            uow.smtp_configs.clear_default(client_id, after.id)
        uow.smtp_configs.save(after)
        uow.audit.append(
            _audit(actor, "smtp_config.update", after, summary(before), summary(after))
        )
        uow.commit()
    return after


def delete_config(
    uow: UnitOfWork, client_id: uuid.UUID, config_id: uuid.UUID, *, actor: Actor
) -> SmtpConfig:
    with uow:
        config = uow.smtp_configs.get(config_id, client_id)
        if config is None:
            raise SmtpConfigNotFound("no such SMTP configuration for this client")
        uow.smtp_configs.remove(config.id)
        uow.audit.append(_audit(actor, "smtp_config.delete", config, summary(config), None))
        uow.commit()
    return config


def probe_config(
    uow: UnitOfWork,
    keyring: SecretKeyring | None,
    client_id: uuid.UUID,
    config_id: uuid.UUID,
    *,
    probe: Probe = probe_relay,
    allow_internal: bool = False,
) -> tuple[SmtpConfig, list[ProbeStep]]:
    """Connect, EHLO, STARTTLS (if asked for) and AUTH (if a username is set); nothing is sent."""
    config = get_config(uow, client_id, config_id)
    steps = probe(
        config.host,
        config.port,
        security=config.security.value,
        username=config.username,
        password=open_password(keyring, config),
        timeout_seconds=config.timeout_seconds,
        allow_internal=allow_internal,
    )
    return config, steps


def open_password(keyring: SecretKeyring | None, config: SmtpConfig) -> str | None:
    if config.sealed_password is None:
        return None
    opened = _require_keyring(keyring).open(
        config.sealed_password, context=sealing_context(config.id)
    )
    return opened.decode("utf-8")


def reseal_all(uow: UnitOfWork, keyring: SecretKeyring | None, *, actor: Actor) -> int:
    """Every stored password sealed again under the keyring's current key; how many changed.

    Rotation: list the new key first in SECRETS_ENCRYPTION_KEYS (the old one
    after it, so both open), run this, then drop the old key. One audit row
    for the run (``smtp_config.reseal``, target the current key's id).
    """
    active = _require_keyring(keyring)
    with uow:
        ids = uow.smtp_configs.all_ids()
    changed = 0
    for config_id in ids:
        with uow:
            config = uow.smtp_configs.get(config_id)
            if config is None or config.sealed_password is None:
                continue
            if not active.needs_reseal(config.sealed_password):
                continue
            config.sealed_password = active.reseal(
                config.sealed_password, context=sealing_context(config.id)
            )
            uow.smtp_configs.save(config)
            uow.commit()
            changed += 1
    with uow:
        uow.audit.append(
            actor.entry(
                "smtp_config.reseal",
                ("secrets_key", active.current),
                None,
                {"resealed": changed, "current_key": active.current},
            )
        )
        uow.commit()
    return changed


def resolve_for_send(uow: UnitOfWork, client_id: uuid.UUID, ref: str) -> uuid.UUID:
    """The id of the client's active relay ``ref`` names (its id or its name); else 422."""
    with uow:
        config: SmtpConfig | None = None
        with contextlib.suppress(ValueError):  # not a UUID: a name
            config = uow.smtp_configs.get(uuid.UUID(ref), client_id)
        if config is None:
            config = uow.smtp_configs.by_name(client_id, ref)
    if config is None or not config.active:
        state = "inactive" if config is not None else "unknown"
        raise UnknownSmtpConfig(
            f"smtp_config {ref!r} is {state} for this client",
            details=[{"field": "smtp_config", "message": f"{state} SMTP configuration"}],
        )
    return config.id


def relay_resolver(uow: UnitOfWork, client_id: uuid.UUID) -> Callable[[str], uuid.UUID]:
    """``prepare_send``'s hook: a send's ``smtp_config`` to the relay's id."""

    def resolve(ref: str) -> uuid.UUID:
        return resolve_for_send(uow, client_id, ref)

    return resolve


def summary(config: SmtpConfig) -> dict[str, Any]:
    """What the audit trail keeps: everything but the password, of which only whether one is set."""
    return {
        "name": config.name,
        "host": config.host,
        "port": config.port,
        "security": config.security.value,
        "username": config.username,
        "password_set": config.sealed_password is not None,
        "pool_size": config.pool_size,
        "timeout_seconds": config.timeout_seconds,
        "active": config.active,
        "is_default": config.is_default,
        "throttle_per_minute": dict(config.throttle_per_minute),
    }


def _apply(config: SmtpConfig, fields: RelayFields, keyring: SecretKeyring | None) -> SmtpConfig:
    if not isinstance(fields.name, Keep):
        config.name = fields.name
    if not isinstance(fields.host, Keep):
        config.host = check_host(fields.host)
    if not isinstance(fields.port, Keep):
        config.port = fields.port
    if not isinstance(fields.security, Keep):
        config.security = fields.security
    if not isinstance(fields.username, Keep):
        config.username = fields.username
    if not isinstance(fields.password, Keep):
        if fields.password is None:
            config.sealed_password = None
        else:
            config.sealed_password = _require_keyring(keyring).seal(
                fields.password.encode("utf-8"), context=sealing_context(config.id)
            )
    if not isinstance(fields.pool_size, Keep):
        config.pool_size = fields.pool_size
    if not isinstance(fields.timeout_seconds, Keep):
        config.timeout_seconds = fields.timeout_seconds
    if not isinstance(fields.active, Keep):
        config.active = fields.active
    if not isinstance(fields.is_default, Keep):
        config.is_default = fields.is_default
    if not isinstance(fields.throttle_per_minute, Keep):
        config.throttle_per_minute = dict(fields.throttle_per_minute)
    if config.sealed_password is not None and not config.username:
        raise InvalidRequest(
            "a password needs a username",
            details=[{"field": "username", "message": "required with a password"}],
        )
    return config


def _audit(
    actor: Actor,
    action: str,
    config: SmtpConfig,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> AuditEntry:
    return actor.entry(action, ("smtp_config", str(config.id)), before, after)
