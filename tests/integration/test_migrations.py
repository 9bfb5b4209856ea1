"""The Alembic migrations build exactly the schema tables.py declares, and undo it."""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from mailroom.adapters.db.migrate import alembic_config, upgrade_to_head
from mailroom.adapters.db.tables import Base
from mailroom.adapters.db.template_versions import SqlTemplateStore
from mailroom.adapters.db.unit_of_work import Database
from mailroom.domain.feedback import bare_address
from mailroom.domain.templates import TemplateSource
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


def test_clients_sharing_a_name_before_the_unique_index_keep_their_rows() -> None:
    # GIVEN a database from before names were unique, with "acme" twice and "Acme" once
    if TOLD_DATABASE_URL is None:
        drop_database_at_exit(SCRATCH_URL)
    empty_database(SCRATCH_URL)
    command.upgrade(alembic_config(SCRATCH_URL), "f7reliability01")
    engine = create_engine(SCRATCH_URL)
    try:
        with engine.begin() as connection:
            for index, name in enumerate(["acme", "Acme", "acme", "globex"]):
                connection.execute(
                    text(
                        "INSERT INTO clients (id, name, api_key_prefix, api_secret_hash,"
                        " quota_limit, rate_limit, created_at)"
                        " VALUES (:id, :name, :key, 'x', 1, 1, now() + make_interval(secs => :n))"
                    ),
                    {"id": str(uuid.uuid4()), "name": name, "key": f"k{index}", "n": index},
                )
        # WHEN the migrations are brought to head
        upgrade_to_head(SCRATCH_URL)
        # THEN the oldest keeps the name, the others carry their id, and none is lost
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT name, id::text FROM clients ORDER BY created_at")
            ).all()
        assert [name for name, _ in rows][0::3] == ["acme", "globex"]
        assert [name for name, _ in rows[1:3]] == [
            f"{original} ({client_id[:8]})"
            for original, (_, client_id) in zip(["Acme", "acme"], rows[1:3], strict=True)
        ]
    finally:
        engine.dispose()


def test_punycode_suppressions_from_before_are_rewritten_to_the_unicode_key() -> None:
    # GIVEN global entries written with a punycode domain, one with a Unicode twin
    if TOLD_DATABASE_URL is None:
        drop_database_at_exit(SCRATCH_URL)
    empty_database(SCRATCH_URL)
    command.upgrade(alembic_config(SCRATCH_URL), "g8clientnames01")
    engine = create_engine(SCRATCH_URL)
    try:
        with engine.begin() as connection:
            for address in (
                "ada@xn--bcher-kva.example",
                "bob@xn--bcher-kva.example",
                "bob@bücher.example",
                "cy@example.com",
            ):
                connection.execute(
                    text("INSERT INTO suppressions (address, reason) VALUES (:a, 'manual')"),
                    {"a": address},
                )
        # WHEN the migrations are brought to head
        upgrade_to_head(SCRATCH_URL)
        # THEN each address is there once, under the key bare_address gives it now
        with engine.connect() as connection:
            addresses = connection.execute(
                text("SELECT address FROM suppressions ORDER BY address")
            ).scalars()
            assert list(addresses) == [
                bare_address("ada@xn--bcher-kva.example"),
                bare_address("bob@xn--bcher-kva.example"),
                "cy@example.com",
            ]
    finally:
        engine.dispose()


def test_templates_uploaded_before_owners_become_shared_and_keep_rendering() -> None:
    # GIVEN a database from before templates had owners, with "promo" uploaded twice
    if TOLD_DATABASE_URL is None:
        drop_database_at_exit(SCRATCH_URL)
    empty_database(SCRATCH_URL)
    command.upgrade(alembic_config(SCRATCH_URL), "h15sandbox01")
    engine = create_engine(SCRATCH_URL)
    try:
        with engine.begin() as connection:
            for version in (1, 2):
                connection.execute(
                    text(
                        "INSERT INTO template_versions (name, version, subject, html)"
                        " VALUES ('promo', :v, 's', :html)"
                    ),
                    {"v": version, "html": f"<p>v{version}</p>"},
                )
        # WHEN the migrations are brought to head
        upgrade_to_head(SCRATCH_URL)
        # THEN both versions are shared, and any client's lookup finds the newest
        with engine.connect() as connection:
            owners = connection.execute(
                text("SELECT version, client_id FROM template_versions ORDER BY version")
            ).all()
        assert [tuple(row) for row in owners] == [(1, None), (2, None)]
        database = Database(SCRATCH_URL)
        try:
            store = SqlTemplateStore(database)
            assert store.get("promo", client_id=uuid.uuid4()).html == "<p>v2</p>"
            assert store.get_exact("promo", 1, owner=None).html == "<p>v1</p>"
            # AND the next shared upload is version 3, not a second version 1
            assert store.add_version(TemplateSource(name="promo", subject="s", html="v3")) == 3
        finally:
            database.engine.dispose()
    finally:
        engine.dispose()


def test_each_key_pair_becomes_an_admin_key_with_the_same_hash_and_comes_back() -> None:
    # GIVEN a database from before api_keys, with a client mid-rotation and a plain one
    if TOLD_DATABASE_URL is None:
        drop_database_at_exit(SCRATCH_URL)
    empty_database(SCRATCH_URL)
    command.upgrade(alembic_config(SCRATCH_URL), "g9idnaddresses01")
    engine = create_engine(SCRATCH_URL)
    rotating, plain = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO clients (id, name, api_key_prefix, api_secret_hash, quota_limit,"
                    " rate_limit, previous_secret_hash, previous_secret_expires_at) VALUES"
                    " (:a, 'rotating', 'mr_live_aaa', 'hash-a', 1, 1, 'old-a', now() + interval"
                    " '1 hour'), (:b, 'plain', 'mr_live_bbb', 'hash-b', 1, 1, NULL, NULL)"
                ),
                {"a": rotating, "b": plain},
            )
        # WHEN the migrations are brought to head
        upgrade_to_head(SCRATCH_URL)
        # THEN each pair is one key: same id, same hashes, scope admin, mode live
        with engine.connect() as connection:
            keys = connection.execute(
                text(
                    "SELECT id, client_id::text, secret_hash, previous_secret_hash,"
                    " scopes, mode, revoked_at FROM api_keys ORDER BY id"
                )
            ).all()
        assert [tuple(k) for k in keys] == [
            ("mr_live_aaa", rotating, "hash-a", "old-a", ["admin"], "live", None),
            ("mr_live_bbb", plain, "hash-b", None, ["admin"], "live", None),
        ]
        # AND downgrading puts the hashes back on the clients
        command.downgrade(alembic_config(SCRATCH_URL), "g9idnaddresses01")
        with engine.connect() as connection:
            restored = connection.execute(
                text("SELECT api_key_prefix, api_secret_hash FROM clients ORDER BY api_key_prefix")
            ).all()
        assert [tuple(r) for r in restored] == [
            ("mr_live_aaa", "hash-a"),
            ("mr_live_bbb", "hash-b"),
        ]
    finally:
        engine.dispose()
