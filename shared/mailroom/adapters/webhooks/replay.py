"""Remembering signed tokens for their validity window, so a captured request replays once."""

from __future__ import annotations

import abc

from mailroom.adapters.redis_store import RedisStore


class ReplayGuard(abc.ABC):
    @abc.abstractmethod
    def claim(self, key: str, ttl_seconds: int) -> bool:
        """True the first time ``key`` is seen within ``ttl_seconds``, False after."""

    @abc.abstractmethod
    def release(self, key: str) -> None:
        """Forget ``key``: processing failed on our side and the provider will retry."""


class RedisReplayGuard(ReplayGuard):
    """SET NX with the window as TTL: atomic across every instance of the function."""

    PREFIX = "mailroom:webhook-token:"

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def claim(self, key: str, ttl_seconds: int) -> bool:
        return bool(self._store.client.set(self.PREFIX + key, b"1", nx=True, ex=ttl_seconds))

    def release(self, key: str) -> None:
        self._store.client.delete(self.PREFIX + key)
