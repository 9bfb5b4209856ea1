"""The Alembic migrations build exactly the schema tables.py declares, and undo it."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from mailroom.adapters.db.migrate import alembic_config, upgrade_to_head
from mailroom.adapters.db.tables import Base
from tests.integration.conftest import TEST_DATABASE_URL, TOLD_DATABASE_URL, empty_database
from tests.run_services import drop_database_at_exit

pytestmark = pytest.mark.integration

SCRATCH_URL = TEST_DATABASE_URL + "_migrations"


def test_migrations_match_the_declared_schema_and_downgrade_cleanly() -> None:
    # GIVEN an empty scratch database
    if TOLD_DATABASE_URL is None:
        drop_database_at_exit(SCRATCH_URL)
    empty_database(SCRATCH_URL)
    engine = create_engine(SCRATCH_URL)
    try:
        # WHEN every migration is applied
        upgrade_to_head(SCRATCH_URL)
        # THEN the database is what tables.py declares: nothing to autogenerate
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
        # AND downgrading to nothing leaves only Alembic's own table
        command.downgrade(alembic_config(SCRATCH_URL), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        # AND upgrading again works (no leftover types or functions)
        upgrade_to_head(SCRATCH_URL)
    finally:
        engine.dispose()
