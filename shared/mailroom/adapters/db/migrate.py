"""Applying the schema: Alembic, driven from code so the runner and tests share it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    # "heads": feature branches of the schema may be merged later; apply all.
    command.upgrade(alembic_config(database_url), "heads")


def ensure_database_exists(database_url: str) -> bool:
    """Create the database named in the URL if it is missing; True if it was created."""
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("DATABASE_URL names no database")
    maintenance = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if exists:
                return False
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        maintenance.dispose()
