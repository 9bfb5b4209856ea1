"""pg8000 rewrites each statement's placeholders on every execute: remembered here.

pg8000 turns SQLAlchemy's ``%s`` placeholders into PostgreSQL's ``$1`` with
a character-by-character scan in Python, on every execute, about 1 µs per
character: the worker's claim and outcome statements (1.5 KB each) and the
send API's insert paid about 1.5 ms each time (issue 8, cProfile of the
worker). For the positional styles the rewritten text depends on the
statement text alone and the parameters pass through unchanged, so the
answer is cached per text; the named styles, whose parameters are reordered
by the scan, still go through pg8000's own every time.
"""

from __future__ import annotations

import functools
from typing import Any

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
