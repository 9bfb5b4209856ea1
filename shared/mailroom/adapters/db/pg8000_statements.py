"""pg8000's per-statement costs, cut: placeholder rewrites, timestamptz reads, COMMIT.

pg8000 turns SQLAlchemy's ``%s`` placeholders into PostgreSQL's ``$1`` with
a character-by-character scan in Python, on every execute, about 1 µs per
character: the worker's claim and outcome statements (1.5 KB each) and the
send API's insert paid about 1.5 ms each time (issue 8, cProfile of the
worker). For the positional styles the rewritten text depends on the
statement text alone and the parameters pass through unchanged, so the
answer is cached per text; the named styles, whose parameters are reordered
by the scan, still go through pg8000's own every time.

pg8000 reads each ``timestamptz`` value with ``datetime.strptime`` (~25 µs;
3% of the worker's time for one column per message, issue 8), where
``datetime.fromisoformat`` reads PostgreSQL's ISO output in well under 1 µs.
What it cannot read (infinity, out-of-range years) goes to pg8000's own.

pg8000 sends COMMIT and ROLLBACK through the extended protocol (parse, bind,
describe, execute, sync: five messages and five answers); the simple query
protocol does it in one of each, ~80 µs less client CPU per transaction here.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import pg8000.converters
import pg8000.dbapi
import pg8000.legacy

_POSITIONAL = frozenset({"format", "qmark", "numeric"})
# pg8000's own, kept before install() replaces it.
pg8000_convert_paramstyle = pg8000.dbapi.convert_paramstyle


@functools.lru_cache(maxsize=1024)
def _rewritten(style: str, query: str) -> str:
    statement, _ = pg8000_convert_paramstyle(style, query, ())
    return str(statement)


def convert_paramstyle(style: str, query: str, args: Any) -> tuple[str, Any]:
    """pg8000's ``convert_paramstyle``, cached for the positional styles."""
    if style in _POSITIONAL:
        return _rewritten(style, query), args
    return pg8000_convert_paramstyle(style, query, args)  # type: ignore[no-any-return]


def install() -> None:
    """Route pg8000's cursors through the cache (idempotent)."""
    pg8000.dbapi.convert_paramstyle = convert_paramstyle
    pg8000.legacy.convert_paramstyle = convert_paramstyle


def timestamptz_in(data: str) -> datetime | str:
    """pg8000's ``timestamptz_in``, at C speed for PostgreSQL's ISO DateStyle."""
    try:
        return datetime.fromisoformat(data)
    except ValueError:
        return pg8000.converters.timestamptz_in(data)  # type: ignore[no-any-return]


def on_connect(dbapi_connection: Any, record: object) -> None:
    """Give a new connection the fast timestamptz reader (an engine ``connect`` listener)."""
    dbapi_connection.register_in_adapter(pg8000.converters.TIMESTAMPTZ, timestamptz_in)


def commit(dbapi_connection: Any) -> None:
    """A dialect's ``do_commit``: COMMIT as a simple query."""
    dbapi_connection.execute_simple("commit")


def rollback(dbapi_connection: Any) -> None:
    """A dialect's ``do_rollback``: ROLLBACK as a simple query, if a transaction is open."""
    if dbapi_connection._in_transaction:
        dbapi_connection.execute_simple("rollback")


def use_simple_transaction_commands(dialect: Any) -> None:
    """Make this engine's dialect (only this one) end transactions as above."""
    dialect.do_commit = commit
    dialect.do_rollback = rollback
