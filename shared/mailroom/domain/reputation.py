"""Sender reputation (issue 21 item 5): rolling bounce and complaint rates, and what they trigger.

Thresholds follow SES's published ones: SES reviews an account at a 5 %
bounce rate and puts it on probation at 10 %; at a 0.1 % complaint rate it
reviews, at 0.5 % it may pause sending. Mailroom acts earlier than SES so a
client never reaches SES's own limits through us: warn at 2.5 % / 0.08 %,
throttle at 4 % / 0.1 %, pause at 5 % / 0.3 %.

The window is sized by volume: the newest hours of the client's live (not
test) traffic until it holds WINDOW_SENDS sends, but never older than
WINDOW_MAX; with fewer than MIN_SENDS sends in it nothing is decided (two
bounces in twenty sends are noise, not a reputation). Bounces and complaints
are counted in the hour they arrived, sends in the hour they were sent.

A pause is sticky: it holds until an operator lifts it, even when the rate
falls (a paused client sends nothing, so its rate cannot recover by itself).
A throttle lifts by itself once the rate is back under the throttle line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

WINDOW_SENDS = 10_000
WINDOW_MAX = timedelta(days=7)
MIN_SENDS = 200
# While throttled the client's mail is claimed at this many sends a minute.
THROTTLE_PER_MINUTE = 60


class ReputationState(StrEnum):
    OK = "ok"
    WARN = "warn"
    THROTTLE = "throttle"
    PAUSE = "pause"


_ORDER = {
    ReputationState.OK: 0,
    ReputationState.WARN: 1,
    ReputationState.THROTTLE: 2,
    ReputationState.PAUSE: 3,
}


@dataclass(frozen=True, slots=True)
class Threshold:
    state: ReputationState
    bounce_rate: float
    complaint_rate: float


# Highest first: the first one a rate reaches is the state.
THRESHOLDS: tuple[Threshold, ...] = (
    Threshold(ReputationState.PAUSE, 0.05, 0.003),
    Threshold(ReputationState.THROTTLE, 0.04, 0.001),
    Threshold(ReputationState.WARN, 0.025, 0.0008),
)


@dataclass(frozen=True, slots=True)
class HourCounts:
    hour: datetime
    sent: int
    hard_bounces: int
    complaints: int


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime | None
    sent: int
    hard_bounces: int
    complaints: int

    @property
    def bounce_rate(self) -> float | None:
        return None if self.sent <= 0 else self.hard_bounces / self.sent

    @property
    def complaint_rate(self) -> float | None:
        return None if self.sent <= 0 else self.complaints / self.sent


def window(hours: Iterable[HourCounts], *, now: datetime) -> Window:
    """The newest hours until WINDOW_SENDS sends, within WINDOW_MAX of ``now``."""
    sent = bounces = complaints = 0
    start: datetime | None = None
    oldest = now - WINDOW_MAX
    for hour in sorted(hours, key=lambda h: h.hour, reverse=True):
        if hour.hour < oldest or sent >= WINDOW_SENDS:
            break
        sent += hour.sent
        bounces += hour.hard_bounces
        complaints += hour.complaints
        start = hour.hour
    return Window(start, sent, bounces, complaints)


def judged(measured: Window) -> ReputationState:
    """The state the rates call for, OK below MIN_SENDS."""
    if measured.sent < MIN_SENDS:
        return ReputationState.OK
    bounce = measured.bounce_rate or 0.0
    complaint = measured.complaint_rate or 0.0
    for threshold in THRESHOLDS:
        if bounce >= threshold.bounce_rate or complaint >= threshold.complaint_rate:
            return threshold.state
    return ReputationState.OK


def next_state(current: ReputationState, measured: Window) -> ReputationState:
    """What the client moves to: a pause stays until lifted, anything else follows the rates."""
    if current is ReputationState.PAUSE:
        return ReputationState.PAUSE
    return judged(measured)


def worse(a: ReputationState, b: ReputationState) -> bool:
    return _ORDER[a] > _ORDER[b]


def reason(state: ReputationState, measured: Window) -> str:
    bounce = (measured.bounce_rate or 0.0) * 100
    complaint = (measured.complaint_rate or 0.0) * 100
    return (
        f"{state.value}: bounce rate {bounce:.2f} %, complaint rate {complaint:.3f} % "
        f"over the last {measured.sent} sends"
    )


@dataclass(frozen=True, slots=True)
class Outlook:
    """What would happen next: the next line up and how far the rates are from it."""

    next_state: ReputationState | None
    bounce_rate_at: float | None
    complaint_rate_at: float | None
    sends_until_judged: int


def outlook(state: ReputationState, measured: Window) -> Outlook:
    above = [t for t in reversed(THRESHOLDS) if _ORDER[t.state] > _ORDER[state]]
    following = above[0] if above else None
    return Outlook(
        next_state=following.state if following else None,
        bounce_rate_at=following.bounce_rate if following else None,
        complaint_rate_at=following.complaint_rate if following else None,
        sends_until_judged=max(0, MIN_SENDS - measured.sent),
    )


def score(measured: Window) -> int:
    """0-100: 100 is clean; 0 is at the pause line on either rate. Linear, so it reads."""
    if measured.sent < MIN_SENDS:
        return 100
    pause = THRESHOLDS[0]
    bounce = (measured.bounce_rate or 0.0) / pause.bounce_rate
    complaint = (measured.complaint_rate or 0.0) / pause.complaint_rate
    return max(0, round(100 * (1 - max(bounce, complaint))))
