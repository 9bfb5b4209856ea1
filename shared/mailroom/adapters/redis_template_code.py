"""Compiled template code and its compile lock in Redis."""

from __future__ import annotations

import secrets

from redis.exceptions import RedisError

from mailroom.adapters.compiled_templates import SharedTemplateCode
from mailroom.adapters.redis_store import RedisStore
from mailroom.domain.errors import DependencyUnavailable

_CODE_PREFIX = "mailroom:template-code:"
_LOCK_PREFIX = "mailroom:template-lock:"
# Delete the lock only if it still holds our token: a holder whose lock
# expired must not release the lock a successor has taken since.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisTemplateCode(SharedTemplateCode):
    def __init__(self, redis_store: RedisStore) -> None:
        self._redis = redis_store

    def get(self, key: str) -> bytes | None:
        try:
            value = self._redis.client.get(_CODE_PREFIX + key)
        except RedisError as error:
            raise DependencyUnavailable(f"redis: {error}") from error
        return bytes(value) if value is not None else None  # type: ignore[arg-type]

    def put(self, key: str, code: bytes, *, ttl_seconds: int) -> None:
        try:
            self._redis.client.set(_CODE_PREFIX + key, code, ex=ttl_seconds)
        except RedisError as error:
            raise DependencyUnavailable(f"redis: {error}") from error

    def try_lock(self, key: str, *, ttl_seconds: float) -> str | None:
        token = secrets.token_hex(16)
        try:
            taken = self._redis.client.set(
                _LOCK_PREFIX + key, token, nx=True, px=max(int(ttl_seconds * 1000), 1)
            )
        except RedisError as error:
            raise DependencyUnavailable(f"redis: {error}") from error
        return token if taken else None

    def unlock(self, key: str, token: str) -> None:
        try:
            self._redis.client.eval(_RELEASE, 1, _LOCK_PREFIX + key, token)
        except RedisError as error:
            raise DependencyUnavailable(f"redis: {error}") from error
