"""Signed addresses and tokens: the VERP return path and the unsubscribe token.

A bounce is tied to its message by the address it was sent to, never by what
its body says: every SMTP message goes out with the envelope sender

    b+<message id, 32 hex>.<key id>-<HMAC, 16 base32>@<bounce domain>

(the bounce domain is ``bounces.<From domain>`` for a sender whose domain is
verified with its bounce MX, else the platform's: ``SenderPolicy``), and only
an address whose HMAC verifies names a message. A forwarder that rewrites the
address (SRS: ``SRS0=HHH=TT=bounces.example.com=b+...@fwd``)
keeps it inside, so the signed part is searched for anywhere in the address.

The one-click unsubscribe token (RFC 8058) is the same construction with its
own purpose in the MAC input: ``<key id>.<message id hex>.<HMAC>``. It never
expires (a link in a mail read a year later must still work) and 128 bits of
HMAC make it unguessable. Keys carry ids so they rotate: the first key of
the setting signs, every key listed verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_KEY_ID = re.compile(r"^[a-z0-9]{1,8}$")
MIN_KEY_BYTES = 16
# 80 bits in the return path keep the local part short (51 characters of
# RFC 5321's 64); a forged bounce needs the MAC *and* a message id.
_VERP_MAC_CHARS = 16
# 128 bits: the unsubscribe token alone acts, so it gets the full strength.
_TOKEN_MAC_CHARS = 26
_VERP = re.compile(r"b\+([0-9a-f]{32})\.([a-z0-9]{1,8})-([a-z2-7]{16})(?![a-z2-7])")
_TOKEN = re.compile(r"^([a-z0-9]{1,8})\.([0-9a-f]{32})\.([a-z2-7]{26})$")


class SigningKeyringError(ValueError):
    """The key setting is not ``<key id>:<base64 of 16+ bytes>``, comma-separated."""


class SigningKeyring:
    """HMAC-SHA256 keys by id: the first signs, all of them verify."""

    def __init__(self, keys: Mapping[str, bytes], *, current: str) -> None:
        if current not in keys:
            raise SigningKeyringError(f"the current key id {current!r} is not in the keyring")
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id):
                raise SigningKeyringError(f"key id {key_id!r}: 1-8 of a-z 0-9")
            if len(key) < MIN_KEY_BYTES:
                raise SigningKeyringError(f"key {key_id!r} is shorter than {MIN_KEY_BYTES} bytes")
        self._keys = dict(keys)
        self.current = current

    @classmethod
    def from_setting(cls, value: str) -> SigningKeyring:
        keys: dict[str, bytes] = {}
        first: str | None = None
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep:
                raise SigningKeyringError("each entry is <key id>:<base64 of 16+ bytes>")
            try:
                padded = encoded.strip() + "=" * (-len(encoded.strip()) % 4)
                key = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
            except (binascii.Error, ValueError) as error:
                raise SigningKeyringError(f"key {key_id!r} is not base64") from error
            if key_id in keys:
                raise SigningKeyringError(f"key id {key_id!r} is listed twice")
            keys[key_id] = key
            first = first or key_id
        if first is None:
            raise SigningKeyringError("no key given")
        return cls(keys, current=first)

    def mac(self, key_id: str, purpose: bytes, message_id: uuid.UUID, chars: int) -> str | None:
        key = self._keys.get(key_id)
        if key is None:
            return None
        digest = hmac.new(key, purpose + b"\0" + message_id.bytes, hashlib.sha256).digest()
        return base64.b32encode(digest).decode("ascii").lower()[:chars]


# --- the VERP return path --------------------------------------------------------


def verp_return_path(keyring: SigningKeyring, message_id: uuid.UUID, bounce_domain: str) -> str:
    mac = keyring.mac(keyring.current, b"verp", message_id, _VERP_MAC_CHARS)
    assert mac is not None  # the current key is always in the keyring
    return f"b+{message_id.hex}.{keyring.current}-{mac}@{bounce_domain}"


@dataclass(frozen=True, slots=True)
class VerpMatch:
    """What the addresses a bounce was sent to say about it."""

    message_id: uuid.UUID | None  # set only when a signature verified
    # A VERP address was there but its signature did not verify (forged,
    # mangled, or signed with a key no longer configured).
    bad_signature: bool = False
    address: str | None = None


def match_return_path(keyring: SigningKeyring, addresses: Iterable[str]) -> VerpMatch:
    """The first address holding a valid VERP signature; else what went wrong."""
    bad: str | None = None
    for address in addresses:
        # Case-folded: some relays upper-case local parts; ours is lower-case throughout.
        for found in _VERP.finditer(address.lower()):
            message_id = uuid.UUID(hex=found[1])
            expected = keyring.mac(found[2], b"verp", message_id, _VERP_MAC_CHARS)
            if expected is not None and hmac.compare_digest(expected, found[3]):
                return VerpMatch(message_id, address=address)
            bad = bad or address
    return VerpMatch(None, bad_signature=bad is not None, address=bad)


# --- the unsubscribe token --------------------------------------------------------------


def unsubscribe_token(keyring: SigningKeyring, message_id: uuid.UUID) -> str:
    mac = keyring.mac(keyring.current, b"unsubscribe", message_id, _TOKEN_MAC_CHARS)
    assert mac is not None
    return f"{keyring.current}.{message_id.hex}.{mac}"


def verify_unsubscribe_token(keyring: SigningKeyring, token: str) -> uuid.UUID | None:
    """The message id the token was made for; None for anything forged or malformed."""
    found = _TOKEN.match(token)
    if found is None:
        return None
    message_id = uuid.UUID(hex=found[2])
    expected = keyring.mac(found[1], b"unsubscribe", message_id, _TOKEN_MAC_CHARS)
    if expected is None or not hmac.compare_digest(expected, found[3]):
        return None
    return message_id


_MAILTO_TOKEN = re.compile(r"u\+([a-z0-9]{1,8}\.[0-9a-f]{32}\.[a-z2-7]{26})@")


def unsubscribe_mailbox(token: str, bounce_domain: str) -> str:
    """The mailto: side of List-Unsubscribe; the inbound function reads it back."""
    return f"u+{token}@{bounce_domain}"


def token_in_mailbox(address: str) -> str | None:
    found = _MAILTO_TOKEN.search(address.lower())
    return found[1] if found else None
