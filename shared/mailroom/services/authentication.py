"""Authenticating API requests without paying argon2 on every one.

A successful verification is remembered in process for a short TTL, keyed by
an HMAC of the presented key id and secret under a per-process random key, together
with the key's credential version read from Redis *before* the database. Each
request reads that version again (one Redis GET) and uses the cached result
only if it is unchanged. Admin changes commit first and bump the version
second, so a cached result can never outlive a suspension, a revocation, a
rotation or a limit change by more than the time between that commit and
that bump. Client changes bump every one of the client's keys.
docs/architecture.md ("Clients and keys") has the full argument.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.secrets import SecretHasher
from mailroom.adapters.tenancy import CredentialVersions
from mailroom.domain.api_keys import ApiKey, ip_allowed
from mailroom.domain.errors import ClientSuspended, IpNotAllowed, Unauthenticated
from mailroom.domain.model import ClientStatus
from mailroom.domain.tenancy import Caller, well_formed
from mailroom.services.api_keys import (
    MISSING_CREDENTIALS,
    WRONG_CREDENTIALS,
    VerifiedKey,
    verify_key,
)


@dataclass(frozen=True, slots=True)
class CachedVerification:
    caller: Caller
    key: ApiKey
    version: str
    expires_at: float  # on the cache's monotonic clock


class VerifiedCredentialCache:
    """Successful verifications only; never a secret, never a failure.

    Keys are HMAC-SHA256 of the presented key pair under a random key made at
    start-up and never stored, so the cache holds nothing that verifies
    anywhere else, and a dictionary lookup's timing depends on a value no
    caller can predict. Failures are not cached: a wrong secret pays argon2
    every time, which is what makes guessing expensive.
    """

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._hmac_key = secrets.token_bytes(32)
        self._entries: dict[bytes, CachedVerification] = {}
        # The local runner and the tests call in from several threads.
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def fingerprint(self, api_key: str, api_secret: str) -> bytes:
        message = api_key.encode() + b"\x00" + api_secret.encode()
        return hmac.new(self._hmac_key, message, hashlib.sha256).digest()

    def get(self, fingerprint: bytes) -> CachedVerification | None:
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is not None and entry.expires_at <= self._clock():
                del self._entries[fingerprint]
                return None
            return entry

    def put(
        self,
        fingerprint: bytes,
        caller: Caller,
        key: ApiKey,
        version: str,
        *,
        lifetime: float | None = None,
    ) -> None:
        """Remember a verification for the TTL, or for ``lifetime`` seconds if shorter."""
        seconds = self._ttl if lifetime is None else min(self._ttl, lifetime)
        if seconds <= 0:
            return
        now = self._clock()
        with self._lock:
            if fingerprint not in self._entries and len(self._entries) >= self._max_entries:
                self._evict(now)
            self._entries[fingerprint] = CachedVerification(caller, key, version, now + seconds)

    def discard(self, fingerprint: bytes) -> None:
        with self._lock:
            self._entries.pop(fingerprint, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, now: float) -> None:
        for key in [key for key, entry in self._entries.items() if entry.expires_at <= now]:
            del self._entries[key]
        while len(self._entries) >= self._max_entries:
            # Dicts keep insertion order: the first entry is the oldest.
            del self._entries[next(iter(self._entries))]


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Who is calling, and the key they called with (its allowlist and own rate limit)."""

    caller: Caller
    key: ApiKey


class Authenticator:
    """Who is calling: the API's one way to check a key and its secret."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        hasher: SecretHasher,
        versions: CredentialVersions,
        cache: VerifiedCredentialCache,
        *,
        last_used_interval_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._uow = uow
        self._hasher = hasher
        self._versions = versions
        self.cache = cache
        self._last_used_interval = last_used_interval_seconds
        self._monotonic = monotonic
        self._now = now
        self._last_used_written: dict[str, float] = {}

    def authenticate(
        self, api_key: str | None, api_secret: str | None, *, source_ip: str | None = None
    ) -> Authenticated:
        """The caller, if the key and secret are right, the key usable from
        ``source_ip`` and the client active; else the one error for it."""
        if not api_key or not api_secret:
            raise Unauthenticated(MISSING_CREDENTIALS)
        if not well_formed(api_key, api_secret):
            raise Unauthenticated(WRONG_CREDENTIALS)
        found = self._cached(api_key, api_secret) if self.cache.enabled else None
        if found is None:
            found = self._verify(api_key, api_secret)
        caller, key = found
        if caller.client.status is ClientStatus.SUSPENDED:
            raise ClientSuspended("this client is suspended")
        if key.ip_allowlist and not ip_allowed(key.ip_allowlist, source_ip):
            raise IpNotAllowed(
                "this key may not be used from this address",
                details=[{"key_id": key.id, "source_ip": source_ip}],
            )
        self._note_use(key)
        return Authenticated(caller, key)

    def _cached(self, api_key: str, api_secret: str) -> tuple[Caller, ApiKey] | None:
        fingerprint = self.cache.fingerprint(api_key, api_secret)
        entry = self.cache.get(fingerprint)
        if entry is None:
            return None
        if self._versions.read(api_key) == entry.version:
            return entry.caller, entry.key
        self.cache.discard(fingerprint)
        return None

    def _verify(self, api_key: str, api_secret: str) -> tuple[Caller, ApiKey]:
        if not self.cache.enabled:
            verified = verify_key(self._uow(), self._hasher, api_key, api_secret, now=self._now())
            return _caller(verified), verified.key
        # The version is read before the row: see the module docstring.
        version = self._versions.read(api_key)
        now = self._now()
        verified = verify_key(self._uow(), self._hasher, api_key, api_secret, now=now)
        caller = _caller(verified)
        if version is None:
            version = self._versions.claim(api_key)
        if version is not None:
            # Bounded by the key's expiry and a rotated-out secret's grace, so
            # neither outlives its moment in the cache.
            lifetime = (
                None
                if verified.valid_until is None
                else (verified.valid_until - now).total_seconds()
            )
            self.cache.put(
                self.cache.fingerprint(api_key, api_secret),
                caller,
                verified.key,
                version,
                lifetime=lifetime,
            )
        return caller, verified.key

    def _note_use(self, key: ApiKey) -> None:
        """Record last_used_at at most once per interval per key in this instance."""
        now = self._monotonic()
        last = self._last_used_written.get(key.id)
        if last is not None and now - last < self._last_used_interval:
            return
        # Marked first: a failing write is not retried on every request.
        self._last_used_written[key.id] = now
        with self._uow() as uow:
            uow.api_keys.touch_last_used(key.id, key.client_id, self._now())
            uow.commit()


def _caller(verified: VerifiedKey) -> Caller:
    return Caller(
        verified.client,
        key_id=verified.key.id,
        scopes=verified.key.scopes,
        mode=verified.key.mode,
    )
