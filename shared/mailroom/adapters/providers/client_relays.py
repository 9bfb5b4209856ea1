"""Clients' own SMTP relays as providers, built per configuration and kept per process (issue 20).

The worker asks, per message, which relay it goes through: the one the
send named (``SendOptions.smtp_config_id``), else the client's default,
else none (the provider chain as configured). A client's configurations
are read once per ``ttl_seconds`` (one query per client, not per message),
and each relay's ``SmtpProvider`` is built once and kept, with its open
connection, until the configuration changes (its fingerprint: host, port,
security, credentials, timeout).

Each relay is named ``smtp-config:<id>``: the name its circuit breaker is
kept under, so one client's dead relay never opens another's breaker, nor
the shared ``smtp`` provider's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.providers.base import EmailProvider
from mailroom.adapters.providers.dkim_signing import DkimKeyCache, SigningProvider
from mailroom.adapters.providers.smtp import SmtpProvider
from mailroom.adapters.smtp_relay_probe import internal_host_refusal
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.domain.smtp_configs import SmtpConfig, sealing_context

log = logging.getLogger(__name__)
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Relay:
    name: str  # smtp-config:<id>: its breaker's name, and the provider recorded
    provider: EmailProvider
    config: SmtpConfig


@dataclass(slots=True)
class _ClientEntry:
    read_at: float
    configs: dict[str, SmtpConfig]  # active ones, by id (str)
    default: str | None


class ClientRelays:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        keyring: SecretKeyring | None,
        *,
        signing_keys: DkimKeyCache | None = None,
        ttl_seconds: float = 30.0,
        clock: Clock = time.monotonic,
        allow_internal: bool = False,
    ) -> None:
        self._uow = uow
        self._keyring = keyring
        self._signing_keys = signing_keys
        self._ttl = ttl_seconds
        self._clock = clock
        self._clients: dict[uuid.UUID, _ClientEntry] = {}
        self._built: dict[str, tuple[tuple[object, ...], Relay]] = {}
        self._lock = threading.Lock()
        self._allow_internal = allow_internal

    def relay_for(self, client_id: uuid.UUID, config_id: str | None) -> Relay | None:
        """The relay this client's message goes through; None: the provider chain.

        A named relay deleted or deactivated since the send was accepted is
        None too: the message goes out through the chain rather than nowhere.
        """
        entry = self._entry(client_id)
        if entry is None:
            return None
        chosen = config_id or entry.default
        config = entry.configs.get(chosen) if chosen else None
        if config is None:
            return None
        return self._relay(config)

    def close(self) -> None:
        with self._lock:
            for _, relay in self._built.values():
                relay.provider.close()
            self._built.clear()

    def _entry(self, client_id: uuid.UUID) -> _ClientEntry | None:
        now = self._clock()
        entry = self._clients.get(client_id)
        if entry is not None and now - entry.read_at < self._ttl:
            return entry
        try:
            with self._uow() as uow:
                configs = uow.smtp_configs.list_for(client_id)
        except Exception:  # the chain still sends; the next batch reads again
            log.exception("reading client %s's SMTP configurations failed", client_id)
            return entry
        active = {str(c.id): c for c in configs if c.active}
        default = next((key for key, c in active.items() if c.is_default), None)
        entry = _ClientEntry(now, active, default)
        self._clients[client_id] = entry
        return entry

    def _relay(self, config: SmtpConfig) -> Relay | None:
        key = str(config.id)
        with self._lock:
            built = self._built.get(key)
            if built is not None and built[0] == config.fingerprint:
                return built[1]
            if built is not None:
                built[1].provider.close()
            try:
                relay = self._build(config)
            except Exception:  # a password that no longer opens: the chain sends instead
                log.exception("building the relay for SMTP configuration %s failed", config.id)
                return None
            self._built[key] = (config.fingerprint, relay)
            return relay

    def _build(self, config: SmtpConfig) -> Relay:
        if not self._allow_internal:
            refusal = internal_host_refusal(config.host, config.port)
            if refusal is not None:
                raise ValueError(refusal)
        password: str | None = None
        if config.sealed_password is not None:
            if self._keyring is None:
                raise ValueError("SECRETS_ENCRYPTION_KEYS is not configured")
            password = self._keyring.open(
                config.sealed_password, context=sealing_context(config.id)
            ).decode("utf-8")
        smtp = SmtpProvider(
            config.host,
            config.port,
            security=config.security.value,
            username=config.username,
            password=password,
            timeout_seconds=config.timeout_seconds,
        )
        # Failures and receipts carry the relay's name, not the shared "smtp".
        smtp.name = config.breaker_name
        provider: EmailProvider = smtp
        if self._signing_keys is not None:
            provider = SigningProvider(smtp, self._signing_keys)
        return Relay(config.breaker_name, provider, config)
