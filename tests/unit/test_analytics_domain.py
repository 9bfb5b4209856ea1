"""What an event adds to the rollups, how a request is read, and the reputation lines (issue 21)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailroom.adapters.db.tables import AnalyticsHourlyByRow, AnalyticsHourlyRow
from mailroom.domain.analytics import (
    COUNTERS,
    Dimension,
    EventFacts,
    Granularity,
    contributions,
    parse_query,
    rates,
    series,
)
from mailroom.domain.errors import InvalidRequest
from mailroom.domain.reputation import (
    MIN_SENDS,
    WINDOW_SENDS,
    HourCounts,
    ReputationState,
    Window,
    judged,
    next_state,
    outlook,
    score,
    window,
)

NOW = datetime(2026, 12, 6, 12, 30, tzinfo=UTC)


def facts(kind: str, **overrides: Any) -> EventFacts:
    values: dict[str, Any] = {
        "event_id": 1,
        "message_id": uuid.uuid4(),
        "type": kind,
        "at": datetime(2026, 12, 6, 10, 42, tzinfo=UTC),
        "detail": {},
        "client_id": uuid.uuid4(),
        "queue_id": None,
        "template_name": "welcome",
        "from_address": "Acme <News@Mail.Acme.TEST>",
        "recipient": "ada@gmail.com",
        "addressees": ["ada@gmail.com"],
        "tags": [],
        "is_test": False,
    }
    values.update(overrides)
    return EventFacts(**values)


def test_the_rollup_tables_hold_exactly_the_counters() -> None:
    for table in (AnalyticsHourlyRow, AnalyticsHourlyByRow):
        columns = [c.name for c in table.__table__.columns if c.name in COUNTERS]
        assert columns == list(COUNTERS)


def test_sent_counts_each_addressee_in_its_recipient_group() -> None:
    # GIVEN a message to one Gmail, one Outlook and one other address
    sent = facts(
        "sent", addressees=["a@gmail.com", "b@hotmail.co.uk", "c@example.org", "d@gmail.com"]
    )
    # WHEN it is rolled up
    parts = contributions(sent, first_open=False, first_click=False)
    # THEN each group gets its addressees, under the sender's domain and the UTC hour
    by_group = {p.key.recipient_group: p.counts["sent"] for p in parts}
    assert by_group == {"gmail": 2, "outlook": 1, "other": 1}
    assert {p.key.sending_domain for p in parts} == {"mail.acme.test"}
    assert {p.key.hour for p in parts} == {datetime(2026, 12, 6, 10, tzinfo=UTC)}
    assert {p.key.queue for p in parts} == {"default"}


@pytest.mark.parametrize(
    ("reason", "counter"),
    [
        ("bounced", "hard_bounces"),
        ("invalid", "hard_bounces"),
        ("blocked", "soft_bounces"),
        ("timed_out", "soft_bounces"),
        (None, "soft_bounces"),
    ],
)
def test_a_bounce_is_hard_only_when_the_address_is_bad(reason: str | None, counter: str) -> None:
    detail = {} if reason is None else {"reject_reason": reason}
    (part,) = contributions(facts("bounced", detail=detail), first_open=False, first_click=False)
    assert part.counts == {counter: 1}


def test_opens_are_unique_only_when_human_and_first() -> None:
    machine = facts("opened", detail={"machine": True})
    human = facts("opened", detail={"machine": False})
    assert contributions(machine, first_open=True, first_click=False)[0].counts == {
        "opens": 1,
        "machine_opens": 1,
    }
    assert contributions(human, first_open=True, first_click=False)[0].counts == {
        "opens": 1,
        "unique_opens": 1,
    }
    assert contributions(human, first_open=False, first_click=False)[0].counts == {"opens": 1}


def test_events_the_rollups_do_not_count_add_nothing() -> None:
    assert contributions(facts("accepted"), first_open=False, first_click=False) == []


def test_rates_are_none_without_a_denominator() -> None:
    assert rates({})["bounce_rate"] is None
    computed = rates({"sent": 200, "hard_bounces": 5, "unique_opens": 10, "unique_clicks": 4})
    assert computed["bounce_rate"] == 0.025
    assert computed["click_to_open_rate"] == 0.4


def query(**params: str) -> Any:
    return parse_query(params, now=NOW, client_id=None)


def test_a_request_reads_its_range_in_its_zone() -> None:
    found = query(**{"from": "2026-12-01", "to": "2026-12-03", "tz": "America/New_York"})
    assert found.start == datetime(2026, 12, 1, 5, tzinfo=UTC)
    assert found.end == datetime(2026, 12, 3, 5, tzinfo=UTC)
    assert found.granularity is Granularity.DAY
    assert found.exact


def test_a_half_hour_zone_is_exact_by_hour_and_not_by_day() -> None:
    # GIVEN one hour of counts at 18:00 UTC, which is 23:30 in Kolkata
    hours = {datetime(2026, 12, 1, 18, tzinfo=UTC): {"sent": 7}}
    by_day = query(**{"from": "2026-12-01", "to": "2026-12-03", "tz": "Asia/Kolkata"})
    by_hour = query(
        **{"from": "2026-12-01", "to": "2026-12-02", "tz": "Asia/Kolkata", "granularity": "hour"}
    )
    # THEN by day it lands on Dec 1, and the answer says days are not exact
    day_points = series(hours, by_day)
    assert [p.counts["sent"] for p in day_points][:2] == [7, 0]
    assert not by_day.exact
    # AND by hour it is the 23:30 local hour, exactly
    hour_points = {p.start.isoformat(): p.counts["sent"] for p in series(hours, by_hour)}
    assert hour_points["2026-12-01T23:30:00+05:30"] == 7
    assert by_hour.exact


def test_a_dst_day_holds_its_25_hours() -> None:
    # GIVEN one send in every UTC hour of Europe/Berlin's 2026-10-25 (the clocks go back)
    found = query(**{"from": "2026-10-25", "to": "2026-10-26", "tz": "Europe/Berlin"})
    hours = {found.start + timedelta(hours=h): {"sent": 1} for h in range(25)}
    # THEN the day is one bucket of 25
    assert [p.counts["sent"] for p in series(hours, found)] == [25]


def test_a_tag_filter_and_the_others_read_their_values() -> None:
    found = query(recipient_group="Gmail", queue="default", sending_domain="Acme.test.")
    assert found.filters == {
        Dimension.RECIPIENT_GROUP: "gmail",
        Dimension.QUEUE: "default",
        Dimension.SENDING_DOMAIN: "acme.test",
    }


@pytest.mark.parametrize(
    ("params", "field", "kind"),
    [
        ({"granularity": "hour", "from": "2026-10-01", "to": "2026-11-02"}, "to", "range_too_long"),
        ({"from": "2025-01-01", "to": "2026-03-01"}, "to", "range_too_long"),
        ({"tz": "Europe/Nowhere"}, "tz", "unknown_timezone"),
        ({"tz": "Etc/../../usr"}, "tz", "unknown_timezone"),
        ({"cohort": "x"}, "cohort", "unknown_filter"),
        ({"from": "2026-13-01"}, "from", "invalid_datetime"),
        ({"from": "9999-12-31T23:00:00-14:00"}, "from", "invalid_datetime"),
        ({"from": "2026-12-02", "to": "2026-12-01"}, "from", "range"),
        ({"tag": "x", "queue": "default"}, "tag", "unsupported_combination"),
        ({"queue": "q1"}, "queue", "invalid"),
        ({"granularity": "week"}, "granularity", "enum"),
        ({"test": "yes"}, "test", "boolean"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(
    params: dict[str, str], field: str, kind: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_query(params, now=NOW, client_id=None)
    assert refused.value.details[0] == {"field": field, "type": kind}


# --- reputation ---------------------------------------------------------------------------


def measured(sent: int, bounces: int = 0, complaints: int = 0) -> Window:
    return Window(NOW, sent, bounces, complaints)


@pytest.mark.parametrize(
    ("bounces", "state"),
    [
        (24, ReputationState.OK),
        (25, ReputationState.WARN),  # 2.5 %
        (39, ReputationState.WARN),
        (40, ReputationState.THROTTLE),  # 4 %
        (49, ReputationState.THROTTLE),
        (50, ReputationState.PAUSE),  # 5 %
    ],
)
def test_bounce_lines_over_1000_sends(bounces: int, state: ReputationState) -> None:
    assert judged(measured(1000, bounces)) is state


@pytest.mark.parametrize(
    ("complaints", "state"),
    [
        (7, ReputationState.OK),
        (8, ReputationState.WARN),  # 0.08 %
        (9, ReputationState.WARN),
        (10, ReputationState.THROTTLE),  # 0.1 %
        (29, ReputationState.THROTTLE),
        (30, ReputationState.PAUSE),  # 0.3 %
    ],
)
def test_complaint_lines_over_10000_sends(complaints: int, state: ReputationState) -> None:
    assert judged(measured(10_000, 0, complaints)) is state


def test_nothing_is_decided_under_the_minimum_sends() -> None:
    assert judged(measured(MIN_SENDS - 1, MIN_SENDS - 1)) is ReputationState.OK
    assert judged(measured(MIN_SENDS, 10)) is ReputationState.PAUSE
    assert outlook(ReputationState.OK, measured(50)).sends_until_judged == MIN_SENDS - 50


def test_a_pause_holds_until_lifted_and_a_throttle_follows_the_rates() -> None:
    assert next_state(ReputationState.PAUSE, measured(10_000)) is ReputationState.PAUSE
    assert next_state(ReputationState.THROTTLE, measured(10_000)) is ReputationState.OK


def test_the_window_takes_the_newest_hours_up_to_its_sends_and_seven_days() -> None:
    hours = [
        HourCounts(NOW - timedelta(hours=h), 1000, 100 if h >= 10 else 0, 0) for h in range(30)
    ]
    recent = window(hours, now=NOW)
    # The newest 10 hours hold the 10,000 sends; the bad older ones are outside.
    assert recent.sent == WINDOW_SENDS
    assert recent.hard_bounces == 0
    old = [HourCounts(NOW - timedelta(days=8), 5000, 5000, 0)]
    assert window(old, now=NOW).sent == 0


def test_the_score_reads_from_clean_to_the_pause_line() -> None:
    assert score(measured(1000)) == 100
    assert score(measured(1000, 25)) == 50
    assert score(measured(1000, 50)) == 0
    assert score(measured(100, 100)) == 100  # not judged yet
