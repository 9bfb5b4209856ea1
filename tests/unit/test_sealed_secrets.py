"""Sealed secrets: AES-256-GCM under a rotatable keyring, bound to a context."""

from __future__ import annotations

import pytest

from mailroom.domain.sealed_secrets import KeyringConfigError, SealedSecretError, SecretKeyring


def test_a_sealed_secret_opens_only_in_its_own_context() -> None:
    # GIVEN a one-key keyring
    keyring = SecretKeyring.from_setting(SecretKeyring.generate_setting("k1"))
    # WHEN a secret is sealed for one row
    sealed = keyring.seal(b"-----BEGIN PRIVATE KEY-----", context="dkim:1:s1")
    # THEN it opens there, never reads as plaintext, and does not open for another row
    assert sealed.startswith("v1.k1.")
    assert b"PRIVATE" not in sealed.encode()
    assert keyring.open(sealed, context="dkim:1:s1") == b"-----BEGIN PRIVATE KEY-----"
    with pytest.raises(SealedSecretError):
        keyring.open(sealed, context="dkim:2:s1")


def test_two_seals_of_one_secret_differ() -> None:
    keyring = SecretKeyring.from_setting(SecretKeyring.generate_setting())
    assert keyring.seal(b"x", context="c") != keyring.seal(b"x", context="c")


def test_a_tampered_sealed_value_does_not_open() -> None:
    keyring = SecretKeyring.from_setting(SecretKeyring.generate_setting())
    sealed = keyring.seal(b"secret", context="c")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    for bad in (flipped, "v2" + sealed[2:], "v1.k1", "v1.k1.!!!!", "v1.k1.AAAA"):
        with pytest.raises(SealedSecretError):
            keyring.open(bad, context="c")


def test_rotation_opens_old_values_and_reseals_them_under_the_new_key() -> None:
    # GIVEN a value sealed under k1
    k1 = SecretKeyring.generate_setting("k1")
    k2 = SecretKeyring.generate_setting("k2")
    sealed = SecretKeyring.from_setting(k1).seal(b"password", context="smtp:7")
    # WHEN the operator puts a new key k2 first
    rotated = SecretKeyring.from_setting(f"{k2},{k1}")
    # THEN the old value still opens, is flagged for resealing, and reseals under k2
    assert rotated.open(sealed, context="smtp:7") == b"password"
    assert rotated.needs_reseal(sealed)
    resealed = rotated.reseal(sealed, context="smtp:7")
    assert resealed.startswith("v1.k2.")
    assert not rotated.needs_reseal(resealed)
    # AND once k1 is removed, only the resealed value opens
    only_new = SecretKeyring.from_setting(k2)
    assert only_new.open(resealed, context="smtp:7") == b"password"
    with pytest.raises(SealedSecretError):
        only_new.open(sealed, context="smtp:7")


@pytest.mark.parametrize(
    "setting",
    [
        "",
        "k1",
        "k1:not-base64!",
        "k1:AAAA",
        "bad id:" + "A" * 43,
        "k1:" + "A" * 43 + ",k1:" + "A" * 43,
    ],
)
def test_malformed_keyring_settings_are_refused(setting: str) -> None:
    with pytest.raises(KeyringConfigError):
        SecretKeyring.from_setting(setting)
