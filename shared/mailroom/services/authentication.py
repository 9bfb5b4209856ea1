"""Authenticating API requests without paying argon2 on every one.

A successful verification is remembered in process for a short TTL, keyed by
an HMAC of the presented key pair under a per-process random key, together
with the key's credential version read from Redis *before* the database. Each
request reads that version again (one Redis GET) and uses the cached result
only if it is unchanged. Admin changes commit first and bump the version
second, so a cached result can never outlive a suspension, a rotation or a
limit change by more than the time between that commit and that bump.
docs/architecture.md ("Clients and keys") has the full argument.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.secrets import SecretHasher
from mailroom.adapters.tenancy import CredentialVersions
from mailroom.domain.errors import ClientSuspended, Unauthenticated
from mailroom.domain.model import Client, ClientStatus
from mailroom.domain.tenancy import well_formed
from mailroom.services.clients import MISSING_CREDENTIALS, WRONG_CREDENTIALS, verify_credentials


@dataclass(frozen=True, slots=True)
class CachedVerification:
    client: Client
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
        self, fingerprint: bytes, client: Client, version: str, *, lifetime: float | None = None
    ) -> None:
        """Remember a verification for the TTL, or for ``lifetime`` seconds if shorter."""
        seconds = self._ttl if lifetime is None else min(self._ttl, lifetime)
        if seconds <= 0:
            return
        now = self._clock()
        with self._lock:
            if fingerprint not in self._entries and len(self._entries) >= self._max_entries:
                self._evict(now)
            self._entries[fingerprint] = CachedVerification(client, version, now + seconds)

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


class Authenticator:
    """Who is calling: the API's one way to check a key pair."""

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
        self._last_used_written: dict[uuid.UUID, float] = {}

    def authenticate(self, api_key: str | None, api_secret: str | None) -> Client:
        """The client, if the key pair is right and the client active; else the one error."""
        if not api_key or not api_secret:
            raise Unauthenticated(MISSING_CREDENTIALS)
        if not well_formed(api_key, api_secret):
            raise Unauthenticated(WRONG_CREDENTIALS)
        client = self._cached(api_key, api_secret) if self.cache.enabled else None
        if client is None:
            client = self._verify(api_key, api_secret)
        if client.status is ClientStatus.SUSPENDED:
            raise ClientSuspended("this client is suspended")
        self._note_use(client)
        return client

    def _cached(self, api_key: str, api_secret: str) -> Client | None:
        fingerprint = self.cache.fingerprint(api_key, api_secret)
        entry = self.cache.get(fingerprint)
        if entry is None:
            return None
        if self._versions.read(api_key) == entry.version:
            return entry.client
        self.cache.discard(fingerprint)
        return None

    def _verify(self, api_key: str, api_secret: str) -> Client:
        if not self.cache.enabled:
            return verify_credentials(
                self._uow(), self._hasher, api_key, api_secret, now=self._now()
            ).client
        # The version is read before the row: see the module docstring.
        version = self._versions.read(api_key)
        now = self._now()
        verified = verify_credentials(self._uow(), self._hasher, api_key, api_secret, now=now)
        if version is None:
            version = self._versions.claim(api_key)
        if version is not None:
            lifetime = (
                None
                if verified.valid_until is None
                else (verified.valid_until - now).total_seconds()
            )
            self.cache.put(
                self.cache.fingerprint(api_key, api_secret),
                verified.client,
                version,
                lifetime=lifetime,
            )
        return verified.client

    def _note_use(self, client: Client) -> None:
        """Record last_used_at at most once per interval per client in this instance."""
        now = self._monotonic()
        last = self._last_used_written.get(client.id)
        if last is not None and now - last < self._last_used_interval:
            return
        with self._uow() as uow:
            uow.clients.touch_last_used(client.id, self._now())
            uow.commit()
        self._last_used_written[client.id] = now
