"""Whether a tracking hit was a person or a machine (issue 21, "honest counts").

Every hit is kept; each ``opened``/``clicked`` event says ``machine: true|false``
and which signals said so. The signals, each documented in
docs/architecture.md ("Tracking"):

- ``user_agent``: a known proxy, scanner or preview user agent
  (``MACHINE_USER_AGENTS``): Gmail's image proxy, Yahoo's, Microsoft Safe
  Links and Outlook's link preview, Proofpoint, Mimecast, Barracuda, and the
  like; and Apple Mail Privacy Protection, whose proxy sends the bare
  ``Mozilla/5.0`` with nothing after it.
- ``no_user_agent``: none at all (a person's mail client always sends one).
- ``ip_range``: an address in ``TRACKING_MACHINE_IP_RANGES`` (by default
  Apple's 17.0.0.0/8, where MPP fetches from).
- ``too_soon``: within ``TRACKING_MACHINE_SECONDS`` of the send: gateways
  scan on arrival, people open later.
- ``honeypot``: a click from a user agent and address that also fetched the
  message's hidden honeypot link (which no person can see) within
  ``TRACKING_HONEYPOT_WINDOW_SECONDS``; a honeypot hit itself is machine.

Gmail's image proxy also fetches for people: Gmail caches images on the
first open, so an open through it means the message was opened by someone
or something, once. It is flagged all the same: a rate of human opens that
counts it would be the dishonest one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

# Case-insensitive substrings of the User-Agent header, and what each is.
MACHINE_USER_AGENTS: tuple[tuple[str, str], ...] = (
    ("googleimageproxy", "Gmail image proxy"),
    ("ggpht.com", "Gmail image proxy"),
    ("yahoomailproxy", "Yahoo Mail proxy"),
    ("bingpreview", "Microsoft link preview"),
    ("safelinks", "Microsoft Safe Links"),
    ("microsoft office", "Microsoft Office / Safe Links"),
    ("ms-office", "Microsoft Office / Safe Links"),
    ("proofpoint", "Proofpoint URL Defense"),
    ("mimecast", "Mimecast"),
    ("barracuda", "Barracuda"),
    ("symantec", "Symantec"),
    ("forcepoint", "Forcepoint"),
    ("zscaler", "Zscaler"),
    ("trendmicro", "Trend Micro"),
    ("sophos", "Sophos"),
    ("fireeye", "FireEye"),
    ("headlesschrome", "headless browser"),
    ("python-requests", "script"),
    ("python-urllib", "script"),
    ("curl/", "script"),
    ("wget/", "script"),
    ("go-http-client", "script"),
    ("bot", "crawler"),
    ("spider", "crawler"),
    ("crawler", "crawler"),
)
# Apple Mail Privacy Protection's proxy: exactly this, nothing after it.
APPLE_MPP_USER_AGENT = "mozilla/5.0"


@dataclass(frozen=True, slots=True)
class MachineSignals:
    """How hits are judged: the settings of docs/architecture.md's list."""

    ip_ranges: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    too_soon_seconds: int = 10

    @classmethod
    def from_settings(cls, ranges: str, too_soon_seconds: int) -> MachineSignals:
        return cls(parse_ranges(ranges.split(",")), too_soon_seconds)


def parse_ranges(
    ranges: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(r.strip(), strict=False) for r in ranges if r.strip())


def machine_user_agent(user_agent: str) -> str | None:
    """What the user agent is, if it is a known machine; None for what looks like a person."""
    lowered = user_agent.strip().lower()
    if lowered == APPLE_MPP_USER_AGENT:
        return "Apple Mail Privacy Protection"
    for needle, name in MACHINE_USER_AGENTS:
        if needle in lowered:
            return name
    return None


def judge_hit(
    signals: MachineSignals,
    *,
    user_agent: str,
    ip: str,
    seconds_since_send: float | None,
    honeypot: bool = False,
) -> list[str]:
    """The machine signals this hit shows; empty: a person, as far as anyone can tell."""
    found: list[str] = []
    if honeypot:
        found.append("honeypot")
    if not user_agent.strip():
        found.append("no_user_agent")
    elif machine_user_agent(user_agent) is not None:
        found.append("user_agent")
    if ip and signals.ip_ranges:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            address = None
        if address is not None and any(address in network for network in signals.ip_ranges):
            found.append("ip_range")
    if seconds_since_send is not None and seconds_since_send < signals.too_soon_seconds:
        found.append("too_soon")
    return found
