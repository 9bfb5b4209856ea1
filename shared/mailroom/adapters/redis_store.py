"""Redis connection, created on first use."""

from __future__ import annotations

import redis


class RedisStore:
    def __init__(self, url: str) -> None:
        self._url = url
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self._url,
                socket_connect_timeout=2,
                socket_timeout=2,
                health_check_interval=30,
            )
        return self._client

    def ping(self) -> None:
        self.client.ping()
