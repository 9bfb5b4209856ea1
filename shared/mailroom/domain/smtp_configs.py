"""A client's own SMTP relays (issue 20, item 4): values and their checks, no I/O."""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mailroom.domain.errors import InvalidRequest


class RelaySecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"  # implicit TLS from the first byte (port 465)


# A host name (LDH labels) or an IPv4/IPv6 literal: nothing with spaces,
# slashes or CR/LF can reach smtplib.
_HOST = re.compile(
    r"^(?:(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]{2,45}\]?)$"
)
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_POOL_SIZE = 10
MAX_TIMEOUT_SECONDS = 60.0


def sealing_context(config_id: uuid.UUID) -> str:
    """The associated data a password is sealed with: it opens for this row only."""
    return f"smtp-password:{config_id}"


def is_internal_address(address: str) -> bool:
    """Loopback, private, link-local (cloud metadata), multicast, reserved or unspecified.

    A client's relay must not be a way into the network Mailroom runs in:
    unless SMTP_RELAY_ALLOW_PRIVATE_HOSTS says so, such relays are refused
    when they are connected to.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True  # not an address we can reason about: refuse it
    return not ip.is_global or ip.is_multicast


def check_host(host: str) -> str:
    if not _HOST.match(host):
        raise InvalidRequest(
            f"{host!r} is not a host name or IP address",
            details=[{"field": "host", "message": "not a host name or IP address"}],
        )
    return host.strip("[]").lower()


@dataclass(slots=True)
class SmtpConfig:
    """One relay: where, how, and with which (sealed) credentials."""

    id: uuid.UUID
    client_id: uuid.UUID
    name: str
    host: str
    port: int
    security: RelaySecurity = RelaySecurity.STARTTLS
    username: str | None = None
    # v1.<key id>.<data> (domain/sealed_secrets.py); never the clear password.
    sealed_password: str | None = None
    pool_size: int = 1
    timeout_seconds: float = 10.0
    active: bool = True
    is_default: bool = False
    # Per-minute ceilings per recipient domain group through this relay.
    throttle_per_minute: dict[str, int] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def breaker_name(self) -> str:
        """Its own circuit breaker: one client's dead relay opens no one else's."""
        return f"smtp-config:{self.id}"

    @property
    def fingerprint(self) -> tuple[object, ...]:
        """What a built provider depends on: a change means building it again."""
        return (
            self.host,
            self.port,
            self.security,
            self.username,
            self.sealed_password,
            self.timeout_seconds,
        )
