"""Unit tests reach no PostgreSQL or Redis, not even by a default setting.

Settings() defaults to the local runner's database and Redis db 0, and
bootstrap() builds real adapters for whatever a test does not replace (the
compiled-template store in Redis, for one). Pointed at addresses that cannot
answer, such an adapter fails the way an outage does (Mailroom's own fallbacks
apply) instead of reading or writing someone else's data.
"""

from __future__ import annotations

import pytest

NO_REDIS = "unix:///nonexistent/unit-tests-use-no-redis.sock"
NO_DATABASE = "postgresql+pg8000://unit-tests-use-no-database@127.0.0.1:1/none"


@pytest.fixture(autouse=True)
def no_backing_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", NO_REDIS)
    monkeypatch.setenv("DATABASE_URL", NO_DATABASE)
