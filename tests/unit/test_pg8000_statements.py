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
