"""API clients: registering them, checking their credentials, and every admin change.

Admin changes are audited in the transaction that makes them, and announced
to every API instance afterwards by bumping the key's credential version in
Redis (``adapters/tenancy.py``): instances compare it on every request, so a
suspension or rotation applies to the next request everywhere.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.secrets import SecretHasher
from mailroom.adapters.tenancy import CredentialVersions
from mailroom.domain.errors import (
    ChangeNotPropagated,
    ClientNotFound,
    ClientSuspended,
    DependencyUnavailable,
    InvalidRequest,
    SandboxKeysUnavailable,
    Unauthenticated,
)
from mailroom.domain.model import Client, ClientStatus
from mailroom.domain.tenancy import (
    API_KEY_PATTERN,
    SYSTEM_ACTOR,
    Actor,
    AuditEntry,
    KeyKind,
    well_formed,
)

LIVE_KEY_PREFIX = KeyKind.LIVE.prefix
MISSING_CREDENTIALS = "send X-Api-Key and X-Api-Secret headers"
# One message for an unknown key, a wrong secret and a malformed either: the
# answer must not tell which keys exist.
WRONG_CREDENTIALS = "the API key or secret is wrong"


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    """A client with a fresh secret: the only time the secret is in clear."""

    client: Client
    api_key: str
    api_secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class VerifiedClient:
    """Credentials that matched, and until when (set when a rotated-out secret matched)."""

    client: Client
    valid_until: datetime | None = None


def new_api_secret() -> str:
    return secrets.token_urlsafe(32)  # 32 random bytes, 43 characters


def register_client(
    uow: UnitOfWork,
    hasher: SecretHasher,
    *,
    name: str,
    rate_limit: int = 600,
    quota_limit: int = 100_000,
    provider_order: list[str] | None = None,
    known_providers: Collection[str] | None = None,
    kind: KeyKind = KeyKind.LIVE,
    actor: Actor = SYSTEM_ACTOR,
    sandbox_mode: bool = False,
) -> RegisteredClient:
    """A new client and its key pair.

    ``known_providers`` are the providers a client's own order may name;
    without it the order is not checked (the runner's demo client has none).
    """
    if kind is not KeyKind.LIVE:
        raise SandboxKeysUnavailable(
            f"{kind.prefix} keys are reserved for sandbox clients, which are not available yet",
            details=[{"field": "key_type", "message": "only 'live' keys can be created"}],
        )
    _check_limits(rate_limit=rate_limit, quota_limit=quota_limit)
    if known_providers is not None:
        check_provider_order(provider_order, known_providers)
    api_key = kind.prefix + secrets.token_hex(12)
    api_secret = new_api_secret()
    client = Client(
        id=uuid.uuid4(),
        name=_clean_name(name),
        api_key_prefix=api_key,
        api_secret_hash=hasher.hash(api_secret),
        rate_limit=rate_limit,
        quota_limit=quota_limit,
        provider_order=provider_order,
        sandbox_mode=sandbox_mode,
    )
    with uow:
        uow.clients.add(client)
        uow.audit.append(_audit(actor, "client.create", client, None, audit_view(client)))
        uow.commit()
        client = uow.clients.get(client.id) or client
    return RegisteredClient(client=client, api_key=api_key, api_secret=api_secret)


def verify_credentials(
    uow: UnitOfWork,
    hasher: SecretHasher,
    api_key: str | None,
    api_secret: str | None,
    *,
    now: datetime,
) -> VerifiedClient:
    """The client these credentials belong to, whatever its status; one error otherwise."""
    if not api_key or not api_secret:
        raise Unauthenticated(MISSING_CREDENTIALS)
    if not well_formed(api_key, api_secret):
        # Nothing we issued looks like this; the format is public, so refusing
        # early tells nobody anything and spares argon2.
        raise Unauthenticated(WRONG_CREDENTIALS)
    with uow:
        client = uow.clients.get_by_api_key(api_key)
    if client is None:
        # An unknown key costs one verification too, so keys cannot be found by timing.
        hasher.burn_time(api_secret)
        raise Unauthenticated(WRONG_CREDENTIALS)
    if hasher.verify(client.api_secret_hash, api_secret):
        return VerifiedClient(client)
    grace_ends = client.previous_secret_expires_at
    if (
        client.previous_secret_hash is not None
        and grace_ends is not None
        and now < grace_ends
        and hasher.verify(client.previous_secret_hash, api_secret)
    ):
        return VerifiedClient(client, valid_until=grace_ends)
    raise Unauthenticated(WRONG_CREDENTIALS)


def authenticate(
    uow: UnitOfWork,
    hasher: SecretHasher,
    api_key: str | None,
    api_secret: str | None,
    *,
    now: datetime | None = None,
) -> Client:
    """The active client these credentials belong to, verified against the database.

    The API goes through ``Authenticator`` (services/authentication.py), which
    caches this per instance.
    """
    verified = verify_credentials(uow, hasher, api_key, api_secret, now=now or datetime.now(UTC))
    if verified.client.status is ClientStatus.SUSPENDED:
        raise ClientSuspended("this client is suspended")
    return verified.client


# -- admin operations -------------------------------------------------------------


class Keep(Enum):
    """'Leave as it is', where None already means something (the default provider order)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class ClientChanges:
    name: str | None = None
    rate_limit: int | None = None
    quota_limit: int | None = None
    provider_order: list[str] | Keep | None = KEEP
    # Issue 15: every key of the client acts in test mode.
    sandbox_mode: bool | None = None


def list_clients(uow: UnitOfWork, status: ClientStatus | None = None) -> list[Client]:
    with uow:
        return uow.clients.list(status)


def find_client(uow: UnitOfWork, ref: str) -> Client:
    """The client with this id or API key."""
    with uow:
        return _find(uow, ref, for_update=False)


def check_provider_order(order: list[str] | None, known: Collection[str]) -> None:
    if order is None:
        return
    problems = [
        {"field": f"provider_order.{index}", "message": f"no provider named {name!r}"}
        for index, name in enumerate(order)
        if name not in known
    ]
    if len(set(order)) != len(order):
        problems.append({"field": "provider_order", "message": "a provider is named twice"})
    if not order:
        problems.append({"field": "provider_order", "message": "name at least one provider"})
    if problems:
        raise InvalidRequest(
            f"provider_order may name only configured providers ({', '.join(known)})",
            details=problems,
        )


def update_client(
    uow: UnitOfWork,
    versions: CredentialVersions,
    ref: str,
    changes: ClientChanges,
    *,
    known_providers: Collection[str],
    actor: Actor,
) -> Client:
    _check_limits(rate_limit=changes.rate_limit, quota_limit=changes.quota_limit)
    if not isinstance(changes.provider_order, Keep):
        check_provider_order(changes.provider_order, known_providers)
    name = None if changes.name is None else _clean_name(changes.name)

    def apply(client: Client) -> None:
        if name is not None:
            client.name = name
        if changes.rate_limit is not None:
            client.rate_limit = changes.rate_limit
        if changes.quota_limit is not None:
            client.quota_limit = changes.quota_limit
        if not isinstance(changes.provider_order, Keep):
            client.provider_order = changes.provider_order
        if changes.sandbox_mode is not None:
            client.sandbox_mode = changes.sandbox_mode

    return _change(uow, versions, ref, "client.update", actor, apply)


def suspend_client(
    uow: UnitOfWork, versions: CredentialVersions, ref: str, *, actor: Actor
) -> Client:
    def apply(client: Client) -> None:
        client.status = ClientStatus.SUSPENDED

    return _change(uow, versions, ref, "client.suspend", actor, apply)


def reactivate_client(
    uow: UnitOfWork, versions: CredentialVersions, ref: str, *, actor: Actor
) -> Client:
    def apply(client: Client) -> None:
        client.status = ClientStatus.ACTIVE

    return _change(uow, versions, ref, "client.reactivate", actor, apply)


def rotate_secret(
    uow: UnitOfWork,
    hasher: SecretHasher,
    versions: CredentialVersions,
    ref: str,
    *,
    grace: timedelta,
    actor: Actor,
    now: datetime | None = None,
) -> RegisteredClient:
    """A new secret; the current one keeps working for ``grace`` (none when zero).

    Only one old secret is kept: rotating again inside a grace period ends
    the older secret's grace at once.
    """
    if grace < timedelta(0):
        raise InvalidRequest("the grace period cannot be negative")
    api_secret = new_api_secret()
    # Hashed before the transaction: argon2 should not run while the row is locked.
    new_hash = hasher.hash(api_secret)
    moment = now or datetime.now(UTC)

    def apply(client: Client) -> None:
        if grace > timedelta(0):
            client.previous_secret_hash = client.api_secret_hash
            client.previous_secret_expires_at = moment + grace
        else:
            client.previous_secret_hash = None
            client.previous_secret_expires_at = None
        client.api_secret_hash = new_hash

    client = _change(uow, versions, ref, "client.rotate_secret", actor, apply)
    return RegisteredClient(client=client, api_key=client.api_key_prefix, api_secret=api_secret)


def audit_trail(
    uow: UnitOfWork,
    *,
    target_id: str | None = None,
    after_seq: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries in the order the actions happened: the last ``limit``, or those after a seq."""
    with uow:
        return uow.audit.read(target_id=target_id, after_seq=after_seq, limit=limit)


def audit_view(client: Client) -> dict[str, Any]:
    """What the audit log keeps of a client: never a secret, never a hash."""
    expires = client.previous_secret_expires_at
    return {
        "name": client.name,
        "api_key": client.api_key_prefix,
        "status": client.status.value,
        "rate_limit": client.rate_limit,
        "quota_limit": client.quota_limit,
        "provider_order": client.provider_order,
        "sandbox_mode": client.sandbox_mode,
        "previous_secret_expires_at": expires.isoformat() if expires else None,
    }


def announce_change(versions: CredentialVersions, client: Client) -> None:
    """Tell every instance that cached verifications of this client are stale."""
    try:
        versions.bump(client.api_key_prefix)
    except DependencyUnavailable as error:
        raise ChangeNotPropagated(
            "the change is saved, but API instances could not be told: they may keep "
            "their cached verification of this client until it expires; repeat the "
            "command to announce it again",
            details=[{"client_id": str(client.id)}],
        ) from error


def _change(
    uow: UnitOfWork,
    versions: CredentialVersions,
    ref: str,
    action: str,
    actor: Actor,
    apply: Callable[[Client], None],
) -> Client:
    with uow:
        client = _find(uow, ref, for_update=True)
        before = audit_view(client)
        apply(client)
        uow.clients.save(client)
        uow.audit.append(_audit(actor, action, client, before, audit_view(client)))
        uow.commit()
        client = uow.clients.get(client.id) or client
    # After the commit, never before: an instance that reads the version and
    # then the row either sees the new row or sees the version change later.
    announce_change(versions, client)
    return client


def _find(uow: UnitOfWork, ref: str, *, for_update: bool) -> Client:
    client: Client | None = None
    try:
        client_id: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        client_id = None
    if client_id is None and API_KEY_PATTERN.fullmatch(ref):
        by_key = uow.clients.get_by_api_key(ref)
        client_id = by_key.id if by_key else None
    if client_id is not None:
        client = uow.clients.get_for_update(client_id) if for_update else uow.clients.get(client_id)
    if client is None:
        raise ClientNotFound(f"no client with id or API key {ref!r}")
    return client


def _audit(
    actor: Actor,
    action: str,
    client: Client,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> AuditEntry:
    return AuditEntry(
        actor=actor.name,
        action=action,
        target_type="client",
        target_id=str(client.id),
        before=before,
        after=after,
        source_ip=actor.source_ip,
    )


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 200 or any(ch < " " for ch in cleaned):
        raise InvalidRequest(
            "a client name is 1 to 200 printable characters",
            details=[{"field": "name", "message": "1 to 200 printable characters"}],
        )
    return cleaned


def _check_limits(*, rate_limit: int | None, quota_limit: int | None) -> None:
    problems = []
    if rate_limit is not None and rate_limit < 1:
        problems.append({"field": "rate_limit", "message": "at least 1 request per minute"})
    if quota_limit is not None and quota_limit < 0:
        problems.append({"field": "quota_limit", "message": "0 or more messages per month"})
    if problems:
        raise InvalidRequest(problems[0]["message"], details=problems)
