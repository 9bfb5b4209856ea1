"""A test run's own databases and Redis server are gone when it ends (README: Running the tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from mailroom.adapters.db.migrate import ensure_database_exists
from tests.run_services import POSTGRES_SERVER, drop_database, run_database_name

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

# A process that creates what a run creates by default, writes to it, and exits.
A_RUN = """
import json
from mailroom.adapters.db.migrate import ensure_database_exists
from tests.run_services import POSTGRES_SERVER, drop_database_at_exit, own_redis_server
from tests.run_services import run_database_name
import redis
database = f"{POSTGRES_SERVER}/{run_database_name('scratch')}"
ensure_database_exists(database)
drop_database_at_exit(database)
redis_url = own_redis_server()
redis.Redis.from_url(redis_url).set("mailroom:probe", "1")
print(json.dumps({"database": database, "redis_url": redis_url}))
"""


def _database_exists(name: str) -> bool:
    server = create_engine(f"{POSTGRES_SERVER}/postgres")
    try:
        with server.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
    finally:
        server.dispose()
    return found is not None


def test_a_run_removes_the_database_and_redis_server_it_created() -> None:
    # GIVEN a process that makes a database and a Redis server of its own and uses them
    done = subprocess.run(
        [sys.executable, "-c", A_RUN],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": f"{REPO_ROOT / 'shared'}:{REPO_ROOT}", "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    name = made["database"].rsplit("/", 1)[1]
    # WHEN it has exited
    # THEN its database is gone, and named for that run, not for this one
    assert name.startswith("mailroom_scratch_")
    assert name != run_database_name("scratch")
    assert not _database_exists(name)
    # AND its Redis server no longer answers, and was never the shared one
    assert not made["redis_url"].endswith(":6379")
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(made["redis_url"], socket_connect_timeout=1).ping()


def test_the_helper_sees_a_database_that_exists() -> None:
    # GIVEN a database this test made (so the check above can fail)
    url = f"{POSTGRES_SERVER}/{run_database_name('probe')}"
    ensure_database_exists(url)
    try:
        # THEN it is reported as existing
        assert _database_exists(run_database_name("probe"))
    finally:
        drop_database(url)
