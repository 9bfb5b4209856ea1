"""API keys: what one is, how its Bearer token is written, and who may use it. No I/O.

A Bearer token is ``mr_<mode>_<key id hex>_<secret><checksum>``: the key id
(24 hex digits) and the secret (43 URL-safe base64 characters) in one string,
then six base62 digits of the CRC32 of everything before them. GitHub's
token format is the model: the checksum lets a mistyped or truncated token be
refused before any lookup, and the fixed prefix lets secret scanners find a
leaked one.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from mailroom.domain.errors import InvalidCidr, InvalidRequest, UnknownScope
from mailroom.domain.tenancy import KeyKind, Scope

# Beyond this many active (unrevoked, unexpired) keys a client's next one is
# refused with 409 key_limit_reached: keys are for services and environments,
# not per request, and each costs a Redis version and an audit trail.
MAX_ACTIVE_KEYS_PER_CLIENT = 100
MAX_ALLOWLIST_ENTRIES = 50
MAX_KEY_NAME = 100

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHECKSUM_LENGTH = 6  # 62**6 > 2**32
TOKEN_PATTERN = re.compile(
    r"(mr_(?:live|test)_[0-9a-f]{24})_([A-Za-z0-9_-]{43})([0-9A-Za-z]{"
    + str(CHECKSUM_LENGTH)
    + "})"
)
TOKEN_LENGTH = len("mr_live_") + 24 + 1 + 43 + CHECKSUM_LENGTH

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def base62(number: int, width: int = CHECKSUM_LENGTH) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits)).rjust(width, "0")


def checksum(body: str) -> str:
    return base62(zlib.crc32(body.encode()))


def encode_token(key_id: str, secret: str) -> str:
    """The Bearer form of a key id and its secret."""
    body = f"{key_id}_{secret}"
    return body + checksum(body)


def decode_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) if ``token`` is one of ours with a matching checksum; else None.

    Pure and cheap: a malformed or mistyped token costs no Redis, database or argon2.
    """
    if len(token) != TOKEN_LENGTH:
        return None
    match = TOKEN_PATTERN.fullmatch(token)
    if match is None:
        return None
    key_id, secret, check = match.groups()
    if check != checksum(f"{key_id}_{secret}"):
        return None
    return key_id, secret


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Known scope names only: UnknownScope (422) names every one that is not."""
    names = list(names)
    known = {scope.value for scope in Scope}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UnknownScope(
            f"unknown scope(s): {', '.join(repr(n) for n in unknown)}",
            details=[
                {"field": "scopes", "message": f"no scope named {name!r}", "value": name}
                for name in unknown
            ]
            + [{"field": "scopes", "known": sorted(known)}],
        )
    if not names:
        raise InvalidRequest(
            "a key needs at least one scope",
            details=[{"field": "scopes", "message": "name at least one scope"}],
        )
    return frozenset(Scope(name) for name in names)


def parse_allowlist(entries: Sequence[str]) -> tuple[IpNetwork, ...]:
    """CIDRs (or bare addresses) as networks; InvalidCidr (422) names each that does not parse.

    Strict: ``10.0.0.7/8`` is refused (host bits set), since it is ambiguous
    whether the /8 or the single host was meant.
    """
    if len(entries) > MAX_ALLOWLIST_ENTRIES:
        raise InvalidRequest(
            f"at most {MAX_ALLOWLIST_ENTRIES} allowlist entries",
            details=[{"field": "ip_allowlist", "message": f"at most {MAX_ALLOWLIST_ENTRIES}"}],
        )
    networks: list[IpNetwork] = []
    problems: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=True))
        except ValueError as error:
            problems.append(
                {"field": f"ip_allowlist.{index}", "message": str(error), "value": entry[:100]}
            )
    if problems:
        raise InvalidCidr("ip_allowlist holds entries that are not CIDRs", details=problems)
    return tuple(networks)


def ip_allowed(allowlist: Sequence[IpNetwork], source_ip: str | None) -> bool:
    """Whether the caller's address (API Gateway's sourceIp) is in the allowlist.

    An empty allowlist allows every address. An IPv4-mapped IPv6 caller
    (``::ffff:203.0.113.7``) matches IPv4 entries too: dual-stack sockets
    report IPv4 peers that way.
    """
    if not allowlist:
        return True
    if not source_ip:
        return False
    try:
        address = ipaddress.ip_address(source_ip.strip())
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in allowlist)


def clean_key_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_KEY_NAME or any(ch < " " for ch in cleaned):
        raise InvalidRequest(
            f"a key name is 1 to {MAX_KEY_NAME} printable characters",
            details=[{"field": "name", "message": f"1 to {MAX_KEY_NAME} printable characters"}],
        )
    return cleaned


@dataclass(slots=True)
class ApiKey:
    """One of a client's keys. The secret itself is never kept, only its argon2id hash."""

    id: str  # the public key id, mr_live_<24 hex> or mr_test_<24 hex>
    client_id: UUID
    name: str
    secret_hash: str = field(repr=False)
    scopes: frozenset[Scope]
    mode: KeyKind = KeyKind.LIVE
    expires_at: datetime | None = None
    ip_allowlist: tuple[IpNetwork, ...] = ()
    # Requests per minute for this key alone, inside its client's limit; None: no own limit.
    rate_limit: int | None = None
    # After a rotation the replaced secret still verifies until this moment.
    previous_secret_hash: str | None = field(default=None, repr=False)
    previous_secret_expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def active_at(self, moment: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or moment < self.expires_at)

    @property
    def masked(self) -> str:
        """How listings show the key: enough to recognise it, not its secret (never kept)."""
        return f"{self.id[:12]}…{self.id[-4:]}"

    def audit_view(self) -> dict[str, Any]:
        """What the audit log keeps of a key: never a secret, never a hash."""
        return {
            "key_id": self.id,
            "client_id": str(self.client_id),
            "name": self.name,
            "scopes": sorted(scope.value for scope in self.scopes),
            "mode": self.mode.value,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "ip_allowlist": [str(network) for network in self.ip_allowlist],
            "rate_limit": self.rate_limit,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "previous_secret_expires_at": self.previous_secret_expires_at.isoformat()
            if self.previous_secret_expires_at
            else None,
        }
