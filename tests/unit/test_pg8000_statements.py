"""The cached placeholder rewrite gives what pg8000's own scan gives."""

from __future__ import annotations

import pytest

from mailroom.adapters.db import pg8000_statements

STATEMENTS = [
    "SELECT %s",
    "SELECT %s, '%%s in a string', \"col%%\" FROM t WHERE a = %s -- %s in a comment\n AND b = %s",
    "SELECT CAST(%s AS uuid[]), x::text, $$ %s $$, E'\\' %s' FROM t WHERE y LIKE 'a%%'",
]


@pytest.mark.parametrize("query", STATEMENTS)
def test_the_cached_rewrite_matches_pg8000s_scan(query: str) -> None:
    args = ("a", "b", "c")
    expected = pg8000_statements.pg8000_convert_paramstyle("format", query, args)
    # Twice: the second answer comes from the cache.
    assert pg8000_statements.convert_paramstyle("format", query, args) == expected
    assert pg8000_statements.convert_paramstyle("format", query, args) == expected


def test_named_parameters_are_still_reordered_per_call() -> None:
    query = "SELECT :b, :a"
    assert pg8000_statements.convert_paramstyle("named", query, {"a": 1, "b": 2}) == (
        "SELECT $1, $2",
        (2, 1),
    )


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23 10:50:51.123456+00",
        "2026-11-23 10:50:51.12+00",
        "2026-11-23 10:50:51+00",
        "2026-11-23 10:50:51.5+05:30",
        "1999-12-31 23:59:59-03",
        "0001-01-01 00:00:00+00",
    ],
)
def test_the_fast_timestamptz_reader_matches_pg8000s(text: str) -> None:
    import pg8000.converters

    assert pg8000_statements.timestamptz_in(text) == pg8000.converters.timestamptz_in(text)


@pytest.mark.parametrize("text", ["infinity", "-infinity", "294276-01-01 00:00:00+00"])
def test_what_fromisoformat_cannot_read_goes_to_pg8000s_reader(text: str) -> None:
    import pg8000.converters

    assert pg8000_statements.timestamptz_in(text) == pg8000.converters.timestamptz_in(text)
