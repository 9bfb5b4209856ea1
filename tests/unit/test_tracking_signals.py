"""Machine-hit signals (issue 21, honest counts): each flags on its own, a person on none."""

from __future__ import annotations

import pytest

from mailroom.domain.tracking_signals import MachineSignals, judge_hit, machine_user_agent

SIGNALS = MachineSignals.from_settings("17.0.0.0/8, 2620:149::/32", too_soon_seconds=10)
PERSON = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)


def judge(
    user_agent: str = PERSON,
    ip: str = "203.0.113.9",
    since: float | None = 3600.0,
    honeypot: bool = False,
) -> list[str]:
    return judge_hit(
        SIGNALS, user_agent=user_agent, ip=ip, seconds_since_send=since, honeypot=honeypot
    )


def test_a_person_shows_no_signal() -> None:
    assert judge() == []


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0",  # Apple Mail Privacy Protection
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) BingPreview/1.0b",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.4266; Pro)",
        "Proofpoint URL Defense",
        "Mimecast-Link-Scanner/1.0",
        "Barracuda Sentinel (EE)",
        "Mozilla/5.0 HeadlessChrome/120.0",
        "python-requests/2.32",
        "curl/8.5.0",
    ],
)
def test_known_proxies_and_scanners_are_machines(user_agent: str) -> None:
    assert machine_user_agent(user_agent) is not None
    assert judge(user_agent=user_agent) == ["user_agent"]


def test_no_user_agent_is_a_machine() -> None:
    assert judge(user_agent="  ") == ["no_user_agent"]


@pytest.mark.parametrize("ip", ["17.58.1.2", "2620:149:1::5"])
def test_apple_ranges_are_machines(ip: str) -> None:
    assert judge(ip=ip) == ["ip_range"]


def test_an_address_outside_the_ranges_or_unreadable_is_not_a_signal() -> None:
    assert judge(ip="18.0.0.1") == []
    assert judge(ip="not-an-ip") == []


def test_a_hit_within_seconds_of_the_send_is_a_machine() -> None:
    assert judge(since=2.0) == ["too_soon"]
    assert judge(since=10.0) == []
    assert judge(since=None) == []


def test_the_honeypot_flags_the_hit() -> None:
    assert judge(honeypot=True) == ["honeypot"]


def test_signals_add_up() -> None:
    assert judge(user_agent="Mozilla/5.0", ip="17.1.1.1", since=1.0) == [
        "user_agent",
        "ip_range",
        "too_soon",
    ]
