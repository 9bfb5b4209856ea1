"""Hashing API secrets with argon2id."""

from __future__ import annotations

import abc

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError


class SecretHasher(abc.ABC):
    @abc.abstractmethod
    def hash(self, secret: str) -> str: ...

    @abc.abstractmethod
    def verify(self, secret_hash: str, secret: str) -> bool: ...

    def burn_time(self, secret: str) -> None:  # noqa: B027 - optional for fakes
        """Spend what a verification costs, for requests with an unknown key."""


class Argon2SecretHasher(SecretHasher):
    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        # Verified when the key is unknown, so an unknown key costs the same
        # time as a wrong secret and keys cannot be discovered by timing.
        self._decoy_hash = self._hasher.hash("mailroom-decoy-secret")

    def hash(self, secret: str) -> str:
        return self._hasher.hash(secret)

    def verify(self, secret_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(secret_hash, secret)
        except (VerificationError, InvalidHashError):
            return False

    def burn_time(self, secret: str) -> None:
        self.verify(self._decoy_hash, secret)
