"""API clients: registering them, checking their credentials, and every admin change.

Admin changes are audited in the transaction that makes them, and announced
to every API instance afterwards by bumping the key's credential version in
Redis (``adapters/tenancy.py``): instances compare it on every request, so a
suspension or rotation applies to the next request everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.secrets import SecretHasher
from mailroom.adapters.tenancy import CredentialVersions
from mailroom.domain.api_keys import ApiKey
from mailroom.domain.errors import (
    ChangeNotPropagated,
    ClientNotFound,
    ClientSuspended,
    DependencyUnavailable,
    InvalidRequest,
    Unauthenticated,
)
from mailroom.domain.model import Client, ClientStatus
from mailroom.domain.tenancy import (
    API_KEY_PATTERN,
    SYSTEM_ACTOR,
    Actor,
    AuditEntry,
    KeyKind,
    Scope,
)
from mailroom.services import api_keys

LIVE_KEY_PREFIX = KeyKind.LIVE.prefix
# Where callers found them before keys had a module of their own.
MISSING_CREDENTIALS = api_keys.MISSING_CREDENTIALS
WRONG_CREDENTIALS = api_keys.WRONG_CREDENTIALS


@dataclass(frozen=True, slots=True)
class RotatedKey:
    """The client's own key with its new secret: the only time the secret is in clear."""

    client: Client
    key: ApiKey
    api_secret: str = field(repr=False)

    @property
    def api_key(self) -> str:
        return self.key.id


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    """A client with a fresh secret: the only time the secret is in clear."""

    client: Client
    api_key: str
    api_secret: str = field(repr=False)


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
    daily_limit: int | None = None,
    actor: Actor = SYSTEM_ACTOR,
    sandbox_mode: bool = False,
) -> RegisteredClient:
    """A new client and its key pair.

    ``known_providers`` are the providers a client's own order may name;
    without it the order is not checked (the runner's demo client has none).
    """
    _check_limits(rate_limit=rate_limit, quota_limit=quota_limit)
    if known_providers is not None:
        check_provider_order(provider_order, known_providers)
    _check_daily_limit(daily_limit)
    client_id = uuid.uuid4()
    # The client's first key may do everything, as every key pair did before
    # scoped keys; the client makes narrower ones itself.
    issued = api_keys.build_key(
        hasher,
        client_id,
        api_keys.KeySpec(name="default", scopes=[Scope.ADMIN.value], mode=kind),
        now=datetime.now(UTC),
    )
    client = Client(
        id=client_id,
        name=_clean_name(name),
        api_key_prefix=issued.key.id,
        rate_limit=rate_limit,
        quota_limit=quota_limit,
        provider_order=provider_order,
        sandbox_mode=sandbox_mode,
        daily_limit=daily_limit,
    )
    with uow:
        uow.clients.add(client)
        uow.api_keys.add(issued.key)
        # One row: the key made with the client is in it (after.api_key, with
        # its scopes), so every key's creation is in the log with its id.
        after = {**audit_view(client), "key": issued.key.audit_view()}
        uow.audit.append(_audit(actor, "client.create", client, None, after))
        uow.commit()
        client = uow.clients.get(client.id) or client
    return RegisteredClient(client=client, api_key=issued.key.id, api_secret=issued.secret)


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
    caches this per instance and checks scopes, IP allowlists and limits too.
    """
    if not api_key or not api_secret:
        raise Unauthenticated(MISSING_CREDENTIALS)
    verified = api_keys.verify_key(uow, hasher, api_key, api_secret, now=now or datetime.now(UTC))
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
    # None in a change means "unlimited", so leaving it alone is KEEP.
    daily_limit: int | Keep | None = KEEP


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
    if not isinstance(changes.daily_limit, Keep):
        _check_daily_limit(changes.daily_limit)
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
        if not isinstance(changes.daily_limit, Keep):
            client.daily_limit = changes.daily_limit

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
) -> RotatedKey:
    """A new secret for the key the client was created with (``api_keys.rotate_key``)."""
    client = find_client(uow, ref)
    issued = api_keys.rotate_key(
        uow,
        hasher,
        versions,
        client.id,
        client.api_key_prefix,
        grace=grace,
        actor=actor,
        now=now,
        as_client_rotation=True,
    )
    return RotatedKey(client=client, key=issued.key, api_secret=issued.secret)


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
    return {
        "name": client.name,
        "api_key": client.api_key_prefix,
        "status": client.status.value,
        "rate_limit": client.rate_limit,
        "quota_limit": client.quota_limit,
        "provider_order": client.provider_order,
        "sandbox_mode": client.sandbox_mode,
        "daily_limit": client.daily_limit,
    }


def announce_change(
    versions: CredentialVersions, client: Client, key_ids: Collection[str] = ()
) -> None:
    """Tell every instance that cached verifications of this client's keys are stale."""
    try:
        for key_id in key_ids or [client.api_key_prefix]:
            versions.bump(key_id)
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
        key_ids = uow.api_keys.active_ids(client.id)
        uow.commit()
        client = uow.clients.get(client.id) or client
    # After the commit, never before: an instance that reads the version and
    # then the row either sees the new row or sees the version change later.
    # Every key carries the client (its status, its limits) in its cache entry.
    announce_change(versions, client, key_ids)
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
    return actor.entry(action, ("client", str(client.id)), before, after)


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 200 or any(ch < " " for ch in cleaned):
        raise InvalidRequest(
            "a client name is 1 to 200 printable characters",
            details=[{"field": "name", "message": "1 to 200 printable characters"}],
        )
    return cleaned


def _check_daily_limit(daily_limit: int | None) -> None:
    if daily_limit is not None and daily_limit < 0:
        raise InvalidRequest(
            "0 or more messages per day",
            details=[{"field": "daily_limit", "message": "0 or more messages per day"}],
        )


def _check_limits(*, rate_limit: int | None, quota_limit: int | None) -> None:
    problems = []
    if rate_limit is not None and rate_limit < 1:
        problems.append({"field": "rate_limit", "message": "at least 1 request per minute"})
    if quota_limit is not None and quota_limit < 0:
        problems.append({"field": "quota_limit", "message": "0 or more messages per month"})
    if problems:
        raise InvalidRequest(problems[0]["message"], details=problems)
