"""Secrets Mailroom must read back, sealed with AES-256-GCM before they are stored.

DKIM private keys, outbound webhook signing secrets and client SMTP passwords
have to be used in the clear later, so they cannot be hashed like API keys.
They are stored sealed under a key from configuration (``SECRETS_ENCRYPTION_KEYS``),
never in the database beside them.

A sealed value reads ``v1.<key id>.<base64url(nonce || ciphertext+tag)>``. The
key id lets the operator rotate: the keyring's first key seals, every key
listed opens, and :meth:`SecretKeyring.needs_reseal` says which stored values
still use an older key. Each seal binds a ``context`` (e.g. ``dkim:<domain id>:
<selector>``) as associated data, so a sealed value copied into another row
does not open there.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailroom.domain.errors import MailroomError

SEALED_VERSION = "v1"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per seal
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SealedSecretError(MailroomError):
    """A sealed value that does not open: malformed, unknown key id, or tampered with."""

    code = "sealed_secret_invalid"


class KeyringConfigError(ValueError):
    """SECRETS_ENCRYPTION_KEYS is not a list of ``<key id>:<base64 of 32 bytes>``."""


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))


class SecretKeyring:
    """AES-256-GCM keys by id; the current one seals, all of them open."""

    def __init__(self, keys: Mapping[str, bytes], *, current: str) -> None:
        if current not in keys:
            raise KeyringConfigError(f"the current key id {current!r} is not in the keyring")
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id):
                raise KeyringConfigError(f"key id {key_id!r}: 1-32 of A-Z a-z 0-9 _ -")
            if len(key) != KEY_BYTES:
                raise KeyringConfigError(f"key {key_id!r} is {len(key)} bytes, not {KEY_BYTES}")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    @classmethod
    def from_setting(cls, value: str) -> SecretKeyring:
        """``"k2:<base64>,k1:<base64>"``: the first entry seals, every entry opens."""
        keys: dict[str, bytes] = {}
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise KeyringConfigError("each entry is <key id>:<base64 of 32 bytes>")
            try:
                key = _b64decode(encoded.strip())
            except (binascii.Error, ValueError) as error:
                raise KeyringConfigError(f"key {key_id!r} is not base64") from error
            if key_id.strip() in keys:
                raise KeyringConfigError(f"key id {key_id!r} is listed twice")
            keys[key_id.strip()] = key
        if not keys:
            raise KeyringConfigError("no keys given")
        return cls(keys, current=next(iter(keys)))

    @staticmethod
    def generate_setting(key_id: str = "k1") -> str:
        """A fresh one-key setting value, for ``make dev`` and the docs."""
        encoded = base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii").rstrip("=")
        return f"{key_id}:{encoded}"

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._ciphers)

    def seal(self, plaintext: bytes, *, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, plaintext, context.encode("utf-8"))
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{SEALED_VERSION}.{self.current}.{body}"

    def open(self, sealed: str, *, context: str) -> bytes:
        version, key_id, body = _split(sealed)
        if version != SEALED_VERSION:
            raise SealedSecretError(f"unknown sealed format {version!r}")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SealedSecretError(f"sealed under key {key_id!r}, which is not configured")
        try:
            raw = _b64decode(body)
        except (binascii.Error, ValueError) as error:
            raise SealedSecretError("sealed value is not base64") from error
        if len(raw) < NONCE_BYTES + 16:
            raise SealedSecretError("sealed value is too short")
        try:
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode("utf-8"))
        except InvalidTag as error:
            raise SealedSecretError("sealed value does not open (wrong context)") from error

    def needs_reseal(self, sealed: str) -> bool:
        """True when ``sealed`` uses a key other than the current one (rotate it)."""
        return _split(sealed)[1] != self.current

    def reseal(self, sealed: str, *, context: str) -> str:
        """``sealed`` opened and sealed again under the current key."""
        return self.seal(self.open(sealed, context=context), context=context)


def _split(sealed: str) -> tuple[str, str, str]:
    parts = sealed.split(".")
    if len(parts) != 3:
        raise SealedSecretError("sealed value is not v1.<key id>.<data>")
    return parts[0], parts[1], parts[2]
