"""A client's API keys: creating, listing, revoking and rotating them, and checking one.

Every change is audited in the transaction that makes it (the key's id, never
its secret) and announced afterwards by bumping the key's credential version
in Redis, so every API instance drops its cached verification at its next
request. Clients manage their own keys with an ``admin``-scoped key (actor
``key:<id>``); operators do the same through the admin API (actor
``admin:<token fingerprint>``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.secrets import SecretHasher
from mailroom.adapters.tenancy import CredentialVersions
from mailroom.domain.api_keys import (
    MAX_ACTIVE_KEYS_PER_CLIENT,
    ApiKey,
    clean_key_name,
    encode_token,
    parse_allowlist,
    parse_scopes,
)
from mailroom.domain.errors import (
    ApiKeyExpired,
    ApiKeyNotFound,
    ApiKeyRevoked,
    ChangeNotPropagated,
    DependencyUnavailable,
    InvalidRequest,
    KeyLimitReached,
    Unauthenticated,
)
from mailroom.domain.model import Client
from mailroom.domain.tenancy import Actor, AuditEntry, KeyKind, well_formed

log = logging.getLogger(__name__)

MISSING_CREDENTIALS = "send X-Api-Key and X-Api-Secret headers, or 'Authorization: Bearer <token>'"
# One message for an unknown key, a wrong secret and a malformed either: the
# answer must not tell which keys exist.
WRONG_CREDENTIALS = "the API key or secret is wrong"
# Listings are bounded, not paged: a client has at most MAX_ACTIVE_KEYS_PER_CLIENT
# active keys, and revoked ones beyond this many are history for the audit log.
LIST_LIMIT = 500


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key with its fresh secret: the only time the secret is in clear."""

    key: ApiKey
    secret: str = field(repr=False)

    @property
    def token(self) -> str:
        return encode_token(self.key.id, self.secret)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a new key may do; raw names and CIDRs, checked by ``issue_key``."""

    name: str
    scopes: Sequence[str]
    mode: KeyKind = KeyKind.LIVE
    expires_at: datetime | None = None
    ip_allowlist: Sequence[str] = ()
    rate_limit: int | None = None


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """Credentials that matched, and until when they may be trusted without a new look."""

    key: ApiKey
    client: Client
    valid_until: datetime | None = None


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 32 random bytes, 43 characters


def new_key_id(mode: KeyKind) -> str:
    return mode.prefix + secrets.token_hex(12)


def build_key(
    hasher: SecretHasher, client_id: uuid.UUID, spec: KeySpec, *, now: datetime
) -> IssuedKey:
    """Check a spec and make its key (not stored). Raises the 422s of bad input."""
    name = clean_key_name(spec.name)
    scopes = parse_scopes(spec.scopes)
    allowlist = parse_allowlist(spec.ip_allowlist)
    problems = []
    if spec.expires_at is not None:
        if spec.expires_at.tzinfo is None:
            problems.append({"field": "expires_at", "message": "give a time zone (e.g. Z)"})
        elif spec.expires_at <= now:
            problems.append({"field": "expires_at", "message": "must be in the future"})
    if spec.rate_limit is not None and not 1 <= spec.rate_limit <= 1_000_000:
        problems.append({"field": "rate_limit", "message": "1 to 1000000 requests per minute"})
    if problems:
        raise InvalidRequest(problems[0]["message"], details=problems)
    secret = new_secret()
    key = ApiKey(
        id=new_key_id(spec.mode),
        client_id=client_id,
        name=name,
        secret_hash=hasher.hash(secret),
        scopes=scopes,
        mode=spec.mode,
        expires_at=spec.expires_at,
        ip_allowlist=allowlist,
        rate_limit=spec.rate_limit,
    )
    return IssuedKey(key, secret)


def issue_key(
    uow: UnitOfWork,
    hasher: SecretHasher,
    client_id: uuid.UUID,
    spec: KeySpec,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> IssuedKey:
    """A new key for the client, unless it has MAX_ACTIVE_KEYS_PER_CLIENT already (409)."""
    moment = now or datetime.now(UTC)
    # Checked and hashed before the transaction: argon2 should not run while the row is locked.
    issued = build_key(hasher, client_id, spec, now=moment)
    with uow:
        # The client's row lock serialises concurrent creations, so the
        # count cannot be raced past the maximum.
        if uow.clients.get_for_update(client_id) is None:
            raise ApiKeyNotFound("no such client")
        if uow.api_keys.count_active(client_id, moment) >= MAX_ACTIVE_KEYS_PER_CLIENT:
            raise KeyLimitReached(
                f"a client may have at most {MAX_ACTIVE_KEYS_PER_CLIENT} active keys; "
                "revoke one first",
                details=[{"max_active_keys": MAX_ACTIVE_KEYS_PER_CLIENT}],
            )
        uow.api_keys.add(issued.key)
        uow.audit.append(
            key_audit(actor, "api_key.create", issued.key, None, issued.key.audit_view())
        )
        uow.commit()
        stored = uow.api_keys.get(issued.key.id) or issued.key
    return IssuedKey(stored, issued.secret)


def list_keys(uow: UnitOfWork, client_id: uuid.UUID) -> list[ApiKey]:
    with uow:
        return uow.api_keys.list_for_client(client_id, limit=LIST_LIMIT)


def revoke_key(
    uow: UnitOfWork,
    versions: CredentialVersions,
    client_id: uuid.UUID,
    key_id: str,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> ApiKey:
    """Revoke a key; revoking a revoked key changes nothing and is not audited again."""
    moment = now or datetime.now(UTC)
    with uow:
        key = _owned(uow, client_id, key_id)
        if key.revoked_at is not None:
            return key
        before = key.audit_view()
        key.revoked_at = moment
        uow.api_keys.save(key)
        uow.audit.append(key_audit(actor, "api_key.revoke", key, before, key.audit_view()))
        uow.commit()
    announce_key_change(versions, [key.id], client_id)
    return key


def rotate_key(
    uow: UnitOfWork,
    hasher: SecretHasher,
    versions: CredentialVersions,
    client_id: uuid.UUID,
    key_id: str,
    *,
    grace: timedelta,
    actor: Actor,
    now: datetime | None = None,
    as_client_rotation: bool = False,
) -> IssuedKey:
    """A new secret; the current one keeps working for ``grace`` (none when zero).

    ``as_client_rotation``: audited as ``client.rotate_secret`` on the client
    (the key's id in before/after), as the client route always was, so an
    operator reading the client's trail still finds it.

    Only one old secret is kept: rotating again inside a grace period ends
    the older secret's grace at once.
    """
    if grace < timedelta(0):
        raise InvalidRequest("the grace period cannot be negative")
    moment = now or datetime.now(UTC)
    secret = new_secret()
    new_hash = hasher.hash(secret)
    with uow:
        key = _owned(uow, client_id, key_id, for_update=True)
        if not key.active_at(moment):
            raise ApiKeyNotFound(
                f"the key {key_id!r} is revoked or expired; create a new one instead",
                details=[{"key_id": key_id}],
            )
        before = key.audit_view()
        if grace > timedelta(0):
            key.previous_secret_hash = key.secret_hash
            key.previous_secret_expires_at = moment + grace
        else:
            key.previous_secret_hash = None
            key.previous_secret_expires_at = None
        key.secret_hash = new_hash
        uow.api_keys.save(key)
        entry = key_audit(actor, "api_key.rotate", key, before, key.audit_view())
        if as_client_rotation:
            entry = replace(
                entry,
                action="client.rotate_secret",
                target_type="client",
                target_id=str(client_id),
            )
        uow.audit.append(entry)
        uow.commit()
    announce_key_change(versions, [key.id], client_id)
    return IssuedKey(key, secret)


def verify_key(
    uow: UnitOfWork, hasher: SecretHasher, key_id: str, secret: str, *, now: datetime
) -> VerifiedKey:
    """The key and client these credentials belong to, whatever the client's status.

    Unknown keys and wrong secrets are one error, 401 ``unauthorized``;
    a revoked or expired key says so, but only to whoever holds its secret.
    """
    if not well_formed(key_id, secret):
        # Nothing we issued looks like this; the format is public, so refusing
        # early tells nobody anything and spares argon2.
        raise Unauthenticated(WRONG_CREDENTIALS)
    with uow:
        found = uow.api_keys.get_with_client(key_id)
    if found is None:
        # An unknown key costs one verification too, so keys cannot be found by timing.
        hasher.burn_time(secret)
        raise Unauthenticated(WRONG_CREDENTIALS)
    key, client = found
    valid_until = key.expires_at
    if not hasher.verify(key.secret_hash, secret):
        grace_ends = key.previous_secret_expires_at
        if not (
            key.previous_secret_hash is not None
            and grace_ends is not None
            and now < grace_ends
            and hasher.verify(key.previous_secret_hash, secret)
        ):
            raise Unauthenticated(WRONG_CREDENTIALS)
        valid_until = grace_ends if valid_until is None else min(valid_until, grace_ends)
    if key.revoked_at is not None:
        raise ApiKeyRevoked("this API key was revoked")
    if key.expires_at is not None and now >= key.expires_at:
        raise ApiKeyExpired(f"this API key expired at {key.expires_at.isoformat()}")
    return VerifiedKey(key, client, valid_until)


def announce_key_change(
    versions: CredentialVersions, key_ids: Sequence[str], client_id: uuid.UUID
) -> None:
    """Tell every instance that cached verifications of these keys are stale."""
    try:
        for key_id in key_ids:
            versions.bump(key_id)
    except DependencyUnavailable as error:
        raise ChangeNotPropagated(
            "the change is saved, but API instances could not be told: they may keep "
            "their cached verification of this key until it expires; repeat the "
            "command to announce it again",
            details=[{"client_id": str(client_id)}],
        ) from error


def _owned(
    uow: UnitOfWork, client_id: uuid.UUID, key_id: str, *, for_update: bool = False
) -> ApiKey:
    key = uow.api_keys.get(key_id, for_update=for_update) if len(key_id) <= 64 else None
    # Another client's key reads exactly like an unknown one.
    if key is None or key.client_id != client_id:
        raise ApiKeyNotFound(f"no API key {key_id[:64]!r} for this client")
    return key


def key_audit(
    actor: Actor,
    action: str,
    key: ApiKey,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> AuditEntry:
    return actor.entry(action, ("api_key", key.id), before, after)


class RefusalAudit:
    """Audits keys refused for scope or IP, at most one row per key and reason per window.

    A refusal is an authenticated caller doing something its key may not: an
    operator wants to see it, but a misconfigured client retrying in a loop
    must not turn into one synchronous INSERT per request. So each instance
    writes the first refusal of a (key, reason) pair and then stays quiet
    for ``window_seconds``; the next row it writes carries how many it left
    out meanwhile. A database failure here is logged, never raised: the
    caller's answer is the refusal either way.
    """

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        *,
        window_seconds: float = 60.0,
        max_tracked: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        self._window = window_seconds
        self._max_tracked = max_tracked
        self._monotonic = monotonic
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def record(
        self, key_id: str, reason: str, detail: dict[str, Any], source_ip: str | None
    ) -> bool:
        """Whether a row was written for this refusal."""
        now = self._monotonic()
        slot = (key_id, reason)
        with self._lock:
            last = self._last.get(slot)
            if last is not None and now - last[0] < self._window:
                self._last[slot] = (last[0], last[1] + 1)
                return False
            if len(self._last) >= self._max_tracked:
                self._last.clear()
            left_out = last[1] if last is not None else 0
            self._last[slot] = (now, 0)
        entry = AuditEntry(
            actor=f"key:{key_id}",
            action="api_key.refused",
            target_type="api_key",
            target_id=key_id,
            before=None,
            after={"reason": reason, **detail, "refusals_not_logged_before": left_out},
            source_ip=source_ip,
        )
        try:
            with self._uow() as uow:
                uow.audit.append(entry)
                uow.commit()
        except Exception:
            log.warning("a key refusal could not be audited", exc_info=True)
            return False
        return True
