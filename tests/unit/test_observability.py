"""The shared logger's JSON lines."""

from __future__ import annotations

import json
import logging

import pytest

from mailroom.entrypoints.observability import logger


def _line(message: str) -> dict[str, object]:
    record = logging.LogRecord("mailroom", logging.INFO, __file__, 1, message, None, None)
    formatted: dict[str, object] = json.loads(logger.registered_formatter.format(record))
    return formatted


@pytest.mark.parametrize(
    "message", ["delivery sent", "123", "true", "null", '"quoted"', "{not json"]
)
def test_a_message_that_is_no_json_object_or_array_is_logged_as_written(message: str) -> None:
    assert _line(message)["message"] == message


def test_a_message_holding_a_json_object_or_array_is_logged_decoded() -> None:
    assert _line('{"sent": 3}')["message"] == {"sent": 3}
    assert _line("[1, 2]")["message"] == [1, 2]
