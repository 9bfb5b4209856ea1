"""Which unexpected errors are outages (503) and which are bugs (500)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError, ProgrammingError

from mailroom.entrypoints.http_errors import is_connection_loss


def _server_error(code: str, message: str) -> Exception:
    # pg8000's shape: the server's fields in a dict, SQLSTATE under "C".
    return Exception({"S": "FATAL", "C": code, "M": message})


def _wrapped(inner: BaseException) -> RuntimeError:
    outer = RuntimeError("while saving")
    outer.__cause__ = inner  # as `raise ... from inner` leaves it
    return outer


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("peer reset"),
        BrokenPipeError(),
        DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
        _wrapped(ConnectionRefusedError("refused")),
        # What pg8000 raises while PostgreSQL shuts down or starts up.
        DBAPIError("connect", {}, _server_error("57P03", "the database system is starting up")),
        DBAPIError("SELECT 1", {}, _server_error("57P01", "terminating connection")),
        DBAPIError("SELECT 1", {}, _server_error("08006", "connection failure")),
    ],
)
def test_lost_connections_are_outages(error: BaseException) -> None:
    assert is_connection_loss(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bug"),
        KeyError("missing"),
        ProgrammingError("UPDATE clients", {}, Exception("check violation")),
        DBAPIError("INSERT", {}, _server_error("23505", "duplicate key value")),
        _wrapped(TypeError("bug inside")),
    ],
)
def test_everything_else_is_a_bug(error: BaseException) -> None:
    assert not is_connection_loss(error)
