"""The planner's read-ahead (issue 17): order kept, errors raised in place, stop honoured."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from mailroom.services.read_ahead import _SWITCH_SECONDS as SWITCH_SECONDS
from mailroom.services.read_ahead import read_ahead


def test_items_come_in_order_and_all_of_them() -> None:
    with read_ahead(iter(range(50))) as items:
        assert list(items) == list(range(50))


def test_the_producers_error_is_raised_in_the_consumer_after_the_items_before_it() -> None:
    # GIVEN an iterator that fails at its fourth item
    def failing() -> Iterator[int]:
        yield from range(3)
        raise ValueError("line 4 is broken")

    # WHEN it is read ahead THEN the first three arrive, then its own error
    seen: list[int] = []
    with pytest.raises(ValueError, match="line 4"), read_ahead(failing()) as items:
        seen.extend(items)
    assert seen == [0, 1, 2]


def test_leaving_early_stops_the_producer_before_the_with_ends() -> None:
    # GIVEN an endless iterator that counts what it produced
    produced: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    # WHEN the consumer takes two and leaves
    with read_ahead(endless(), depth=1) as items:
        assert [next(items), next(items)] == [0, 1]

    # THEN nothing more is produced once the with has ended (at most a few ahead)
    count = len(produced)
    assert count <= 5
    assert not any(t.name == "read-ahead" for t in threading.enumerate())
    assert len(produced) == count


def test_the_switch_interval_is_short_while_any_producer_runs_and_restored_after() -> None:
    # GIVEN the interpreter's own switch interval
    before = sys.getswitchinterval()
    # WHEN two read-aheads overlap, the first ending before the second
    first = read_ahead(iter(range(3)))
    second = read_ahead(iter(range(3)))
    first.__enter__()
    during_one = sys.getswitchinterval()
    second.__enter__()
    first.__exit__(None, None, None)
    during_second_alone = sys.getswitchinterval()
    second.__exit__(None, None, None)
    # THEN it is short while either runs, and the caller's again after both
    assert before > SWITCH_SECONDS
    assert during_one == pytest.approx(SWITCH_SECONDS)
    assert during_second_alone == pytest.approx(SWITCH_SECONDS)
    assert sys.getswitchinterval() == before
