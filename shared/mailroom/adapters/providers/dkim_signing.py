"""DKIM signing in front of a provider that carries our MIME as is (SMTP, Mailgun).

``SigningProvider`` wraps a provider: it signs the message with its From
domain's active keys and hands the signed bytes on. Keys come from
``DkimKeyCache``, which reads a domain's keys from PostgreSQL once per
``ttl_seconds`` and process (a domain with none is remembered too), so
signing costs no query per message. A message whose From domain has no key
goes out unsigned, as before this existed (the send API's sender check
decides who may send as what). Keys sign only the mail of the client that
owns the domain: with sender verification relaxed (``SENDER_VERIFICATION``),
a client may send as another's domain, but never with its signature.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from email.utils import parseaddr

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.providers.base import EmailProvider, ProviderReceipt
from mailroom.domain import dkim
from mailroom.domain.errors import InvalidDomain
from mailroom.domain.mime import OutgoingEmail
from mailroom.domain.sealed_secrets import SealedSecretError, SecretKeyring
from mailroom.domain.sending_domains import KeyState, normalise_domain, sealing_context

log = logging.getLogger(__name__)


class DkimKeyCache:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        keyring: SecretKeyring,
        *,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        self._keyring = keyring
        self._ttl = ttl_seconds
        self._clock = clock
        # domain -> (expires, owning client, its active keys)
        self._keys: dict[str, tuple[float, uuid.UUID | None, list[dkim.SigningKey]]] = {}
        self._lock = threading.Lock()

    def keys_for(self, domain: str, client_id: uuid.UUID | None) -> list[dkim.SigningKey]:
        """The domain's active keys if ``client_id`` owns the domain, else none."""
        now = self._clock()
        with self._lock:
            cached = self._keys.get(domain)
        if cached is None or cached[0] <= now:
            owner, keys = self._load(domain)
            cached = (now + self._ttl, owner, keys)
            with self._lock:
                self._keys[domain] = cached
        _, owner, keys = cached
        return keys if owner is not None and owner == client_id else []

    def _load(self, domain: str) -> tuple[uuid.UUID | None, list[dkim.SigningKey]]:
        with self._uow() as uow:
            found = uow.sending_domains.by_name(domain)
        if found is None:
            return None, []
        keys = []
        for key in found.keys:
            if key.state is not KeyState.ACTIVE:
                continue
            try:
                pem = self._keyring.open(
                    key.sealed_private_key, context=sealing_context(found.id, key.selector)
                )
                private = dkim.load_private_key(pem)
            except (SealedSecretError, ValueError) as error:
                # A key sealed under a key no longer configured: sign with
                # the others (or none) rather than stop the mail.
                log.error("DKIM key does not open", extra={"domain": domain, "error": str(error)})
                continue
            keys.append(dkim.SigningKey(found.domain, key.selector, key.algorithm, private))
        return found.client_id, keys


class SigningProvider(EmailProvider):
    """``inner`` with every message DKIM-signed for its From domain first."""

    def __init__(self, inner: EmailProvider, keys: DkimKeyCache) -> None:
        self._inner = inner
        self._keys = keys
        self.name = inner.name

    def send(self, email: OutgoingEmail) -> ProviderReceipt:
        return self._inner.send(sign_email(email, self._keys))

    def close(self) -> None:
        self._inner.close()


def sign_email(email: OutgoingEmail, keys: DkimKeyCache) -> OutgoingEmail:
    domain = from_header_domain(email.mime)
    signing = keys.keys_for(domain, email.client_id) if domain else []
    if not signing:
        return email
    signed = dkim.sign(email.mime, signing)
    utf8 = email.mime_utf8
    if utf8 is not None:
        # A non-ASCII local part makes both forms the same RFC 6532 bytes
        # (domain/mime.py): one signature serves both, not a second RSA
        # operation (~0.3 ms) for the same content.
        utf8 = signed if utf8 == email.mime else dkim.sign(utf8, signing)
    return replace(email, mime=signed, mime_utf8=utf8)


# From header value -> its domain: a worker sends for few senders, and the
# stdlib address parser costs more than the lookup (~0.15 ms per message).
_FROM_DOMAINS: dict[bytes, str | None] = {}
_FROM_DOMAINS_MAX = 4096


def from_header_domain(mime: bytes) -> str | None:
    """The A-label domain of the message's From header, or None."""
    fields, _ = dkim.split_message(mime[: mime.find(b"\r\n\r\n") + 4] or mime)
    for field in fields:
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"from":
            known = _FROM_DOMAINS.get(value, _UNSEEN)
            if known is not _UNSEEN:
                return known  # type: ignore[return-value]
            domain = _domain_of(value)
            if len(_FROM_DOMAINS) >= _FROM_DOMAINS_MAX:
                _FROM_DOMAINS.clear()
            _FROM_DOMAINS[value] = domain
            return domain
    return None


_UNSEEN = object()


def _domain_of(value: bytes) -> str | None:
    _, address = parseaddr(value.replace(b"\r\n", b"").decode("utf-8", "replace"))
    domain = address.rpartition("@")[2]
    try:
        return normalise_domain(domain) if domain else None
    except InvalidDomain:
        return None
