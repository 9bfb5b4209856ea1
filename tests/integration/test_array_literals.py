"""Array literals built in Python read back on PostgreSQL as the lists they came from."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from mailroom.adapters.db.array_literals import text_array, uuid_array
from mailroom.adapters.db.unit_of_work import Database

pytestmark = pytest.mark.integration

# PostgreSQL text holds any character but NUL (and UTF-8 no lone surrogate).
_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=30
)
_AWKWARD = ["", "NULL", "null", "a,b", "{x}", '"', "\\", '\\"', " padded ", "tab\there", "é ✉"]


def _read_back(database: Database, literal: str, cast: str) -> list[object]:
    with database.engine.connect() as connection:
        value = connection.execute(text(f"SELECT CAST(:v AS {cast})"), {"v": literal}).scalar()
    assert isinstance(value, list)
    return value


def test_awkward_text_survives(database: Database) -> None:
    assert _read_back(database, text_array(_AWKWARD), "text[]") == _AWKWARD
    assert _read_back(database, text_array([]), "text[]") == []


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(_TEXT, max_size=8))
def test_any_text_survives(database: Database, values: list[str]) -> None:
    assert _read_back(database, text_array(values), "text[]") == values


def test_uuids_survive(database: Database) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    assert [uuid.UUID(str(v)) for v in _read_back(database, uuid_array(ids), "uuid[]")] == ids
