"""Recipient domain groups, "slow down" replies, warm-up caps (issue 20): the rules alone."""

from __future__ import annotations

import pytest

from mailroom.domain.throttling import (
    DomainGroup,
    ThrottlePolicy,
    asks_to_slow_down,
    group_of,
    parse_ceilings,
)


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("ada@gmail.com", DomainGroup.GMAIL),
        ("ada@GoogleMail.com", DomainGroup.GMAIL),
        ("ada@hotmail.com", DomainGroup.OUTLOOK),
        ("ada@hotmail.co.uk", DomainGroup.OUTLOOK),
        ("ada@live.com", DomainGroup.OUTLOOK),
        ("ada@msn.com", DomainGroup.OUTLOOK),
        ("ada@outlook.com", DomainGroup.OUTLOOK),
        ("ada@yahoo.fr", DomainGroup.YAHOO),
        ("ada@aol.com", DomainGroup.YAHOO),
        ("ada@example.org", DomainGroup.OTHER),
        ("ada@notgmail.com", DomainGroup.OTHER),
        ("gmail.com", DomainGroup.GMAIL),
    ],
)
def test_recipients_fall_into_their_providers_group(address: str, group: DomainGroup) -> None:
    assert group_of(address) is group


@pytest.mark.parametrize(
    ("reply", "slow_down"),
    [
        (
            "recipients refused: a@gmail.com: 421 4.7.28 Our system has detected an unusual rate",
            True,
        ),
        ("message refused: 451 b'4.7.1 Please try again later'", True),
        ("421 Service not available", True),
        ("recipients refused: a@x.org: 451 4.3.0 try again later", False),
        ("recipients refused: a@x.org: 550 5.1.1 no such user", False),
        ("connection failed: [Errno 111] Connection refused", False),
        ("sender refused: 452 4.2.1 mailbox full, try 4210 later", False),
    ],
)
def test_only_421_and_4_7_x_ask_to_slow_down(reply: str, slow_down: bool) -> None:
    assert asks_to_slow_down(reply) is slow_down


def test_warm_up_doubles_daily_until_the_target() -> None:
    # GIVEN 50 a day, doubling, to 1,000
    policy = ThrottlePolicy(warmup_start_per_day=50, warmup_target_per_day=1000)
    # THEN days 0-4 are capped at 50, 100, 200, 400, 800, and day 5 (1,600) is not
    assert [policy.warmup_cap(day) for day in range(6)] == [50, 100, 200, 400, 800, None]
    # AND without a schedule nothing is capped
    assert ThrottlePolicy().warmup_cap(0) is None


def test_aimd_halves_to_the_floor_and_climbs_back_by_the_step() -> None:
    policy = ThrottlePolicy(decrease_factor=0.5, increase_step=10, floor_per_minute=2)
    assert policy.decreased(100) == 50
    assert policy.decreased(3) == 2
    assert policy.recovered(50, 100, minutes=2) == 70
    assert policy.recovered(95, 100, minutes=2) == 100


def test_a_relays_ceiling_overrides_the_services() -> None:
    policy = ThrottlePolicy(per_minute={DomainGroup.GMAIL: 600})
    assert policy.ceiling(DomainGroup.GMAIL) == 600
    assert policy.ceiling(DomainGroup.GMAIL, {"gmail": 50}) == 50
    assert policy.ceiling(DomainGroup.YAHOO) is None


@pytest.mark.parametrize("value", ["hotmail=5", "gmail", "gmail=0", "gmail=x"])
def test_bad_ceilings_are_refused(value: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each is a plain ValueError
        parse_ceilings(value)


def test_ceilings_parse() -> None:
    assert parse_ceilings(" gmail=600, other=1200 ,") == {
        DomainGroup.GMAIL: 600,
        DomainGroup.OTHER: 1200,
    }
