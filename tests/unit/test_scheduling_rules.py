"""Scheduling's rules without I/O: cron and daylight saving, misfires, send times (issue 18)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mailroom.domain.errors import InvalidRequest
from mailroom.domain.scheduling import (
    MisfirePolicy,
    RunTrigger,
    Schedule,
    check_cron,
    next_fire,
    normalise_send_time,
    plan_due,
    queue_delay_seconds,
    zone,
)

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


def _daily_fires(cron: str, tz: str, start: datetime, days: int) -> list[datetime]:
    """Every fire time over ``days``, found as the scheduler finds them: one after another."""
    fires: list[datetime] = []
    moment = start
    end = start + timedelta(days=days)
    while True:
        fired = next_fire(cron, tz, moment)
        assert fired is not None
        if fired >= end:
            return fires
        fires.append(fired)
        moment = fired


class TestDaylightSaving:
    def test_berlin_spring_forward_runs_right_after_the_jump(self) -> None:
        # GIVEN 02:30 every day in Berlin; on 29 March 2026 02:00-03:00 does not exist
        fires = _daily_fires("30 2 * * *", "Europe/Berlin", _utc(2026, 3, 27, 12), 4)
        # THEN that day it runs at 03:00 CEST (01:00 UTC), right after the jump,
        # and on the other days at 02:30 local
        assert fires == [
            _utc(2026, 3, 28, 1, 30),  # 02:30 CET
            _utc(2026, 3, 29, 1, 0),  # 03:00 CEST
            _utc(2026, 3, 30, 0, 30),  # 02:30 CEST
            _utc(2026, 3, 31, 0, 30),
        ]

    def test_berlin_fall_back_does_not_run_twice(self) -> None:
        # GIVEN 02:30 every day in Berlin; on 25 October 2026 02:00-03:00 happens twice
        fires = _daily_fires("30 2 * * *", "Europe/Berlin", _utc(2026, 10, 24, 12), 3)
        # THEN it runs once that day, at the first 02:30 (CEST, 00:30 UTC)
        assert fires == [
            _utc(2026, 10, 25, 0, 30),
            _utc(2026, 10, 26, 1, 30),  # 02:30 CET
            _utc(2026, 10, 27, 1, 30),
        ]

    def test_new_york_spring_forward_runs_right_after_the_jump(self) -> None:
        # GIVEN 02:30 every day in New York; on 8 March 2026 02:00-03:00 does not exist
        fires = _daily_fires("30 2 * * *", "America/New_York", _utc(2026, 3, 7, 12), 3)
        assert fires == [
            _utc(2026, 3, 8, 7, 0),  # 03:00 EDT, right after the jump
            _utc(2026, 3, 9, 6, 30),  # 02:30 EDT
            _utc(2026, 3, 10, 6, 30),
        ]

    def test_new_york_fall_back_does_not_run_twice(self) -> None:
        # GIVEN 01:30 every day in New York; on 1 November 2026 01:00-02:00 happens twice
        fires = _daily_fires("30 1 * * *", "America/New_York", _utc(2026, 10, 31, 12), 3)
        assert fires == [
            _utc(2026, 11, 1, 5, 30),  # 01:30 EDT, the first one only
            _utc(2026, 11, 2, 6, 30),  # 01:30 EST
            _utc(2026, 11, 3, 6, 30),
        ]

    @pytest.mark.parametrize(
        ("tz", "day"),
        [("Europe/Berlin", _utc(2026, 10, 24, 12)), ("America/New_York", _utc(2026, 10, 31, 12))],
    )
    def test_a_scheduler_ticking_every_minute_through_fall_back_runs_once(
        self, tz: str, day: datetime
    ) -> None:
        # GIVEN a daily 01:30 schedule, and a scheduler pass every minute for two days
        schedule = _schedule("30 1 * * *", tz, created=day)
        runs: list[datetime] = []
        now = day
        while now < day + timedelta(days=2):
            now += timedelta(minutes=1)
            assert schedule.next_run_at is not None
            if schedule.next_run_at <= now:
                plan = plan_due(schedule, now)
                assert plan.fire_at is not None
                assert plan.trigger is RunTrigger.CRON
                runs.append(plan.fire_at)
                schedule.next_run_at = plan.next_run_at
        # THEN it ran once a day, never twice in the repeated hour
        assert len(runs) == 2
        assert runs[1] - runs[0] >= timedelta(hours=24)


def _schedule(
    cron: str,
    tz: str,
    *,
    created: datetime,
    policy: MisfirePolicy = MisfirePolicy.SEND,
    grace: int = 300,
) -> Schedule:
    schedule = Schedule(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        name="n",
        cron=cron,
        timezone=tz,
        send={},
        misfire_policy=policy,
        misfire_grace_seconds=grace,
    )
    schedule.next_run_at = schedule.first_fire_after(created)
    return schedule


class TestMisfires:
    def test_on_time_the_due_fire_time_runs(self) -> None:
        schedule = _schedule("*/5 * * * *", "UTC", created=NOW)
        plan = plan_due(schedule, NOW + timedelta(minutes=5, seconds=2))
        assert (plan.fire_at, plan.trigger, plan.folded, plan.skipped) == (
            NOW + timedelta(minutes=5),
            RunTrigger.CRON,
            [],
            [],
        )
        assert plan.next_run_at == NOW + timedelta(minutes=10)

    def test_an_hour_down_under_send_runs_once_for_all_missed(self) -> None:
        # GIVEN every five minutes, a one-minute grace, and a scheduler down 10:00-11:03
        schedule = _schedule("*/5 * * * *", "UTC", created=NOW, grace=60)
        plan = plan_due(schedule, NOW + timedelta(hours=1, minutes=3))
        # THEN one catch-up run stands for all twelve fire times
        assert (plan.fire_at, plan.trigger) == (NOW + timedelta(hours=1), RunTrigger.CATCH_UP)
        assert (len(plan.folded), plan.skipped) == (11, [])
        assert plan.next_run_at == NOW + timedelta(hours=1, minutes=5)

    def test_an_hour_down_under_skip_runs_none(self) -> None:
        schedule = _schedule("*/5 * * * *", "UTC", created=NOW, policy=MisfirePolicy.SKIP, grace=60)
        plan = plan_due(schedule, NOW + timedelta(hours=1, minutes=3))
        assert (plan.fire_at, plan.folded, len(plan.skipped)) == (None, [], 12)
        assert plan.next_run_at == NOW + timedelta(hours=1, minutes=5)

    def test_back_in_time_for_the_newest_fire_time_skip_still_skips_the_older(self) -> None:
        schedule = _schedule("*/5 * * * *", "UTC", created=NOW, policy=MisfirePolicy.SKIP)
        plan = plan_due(schedule, NOW + timedelta(hours=1, seconds=30))
        assert (plan.fire_at, plan.trigger) == (NOW + timedelta(hours=1), RunTrigger.CRON)
        assert (plan.folded, len(plan.skipped)) == ([], 11)

    def test_a_month_down_is_walked_only_so_far(self) -> None:
        schedule = _schedule("* * * * *", "UTC", created=NOW, policy=MisfirePolicy.SKIP)
        later = NOW + timedelta(days=30)
        plan = plan_due(schedule, later)
        assert plan.missed_more
        assert len(plan.skipped) == 100
        assert plan.next_run_at == later + timedelta(minutes=1)

    def test_ends_at_ends_the_schedule(self) -> None:
        schedule = _schedule("0 * * * *", "UTC", created=NOW)
        schedule.ends_at = NOW + timedelta(hours=1)
        plan = plan_due(schedule, NOW + timedelta(hours=1))
        assert plan.fire_at == NOW + timedelta(hours=1)
        assert plan.next_run_at is None


class TestCronRefusals:
    @pytest.mark.parametrize(
        "cron",
        ["61 * * * *", "0 0 30 2 *", "* * * *", "@daily", "0 0 * * * *", "a b c d e", "0 25 * * *"],
    )
    def test_refused(self, cron: str) -> None:
        with pytest.raises(InvalidRequest) as refused:
            check_cron(cron, "UTC", now=NOW)
        assert refused.value.details[0]["field"] == "cron"

    def test_unknown_and_hostile_time_zones_are_refused(self) -> None:
        for name in ("Mars/Olympus_Mons", "../../etc/passwd", "", " UTC", "/etc/localtime"):
            with pytest.raises(InvalidRequest):
                zone(name)
        assert str(zone("America/New_York")) == "America/New_York"


class TestSendTimes:
    def test_naive_and_far_times_are_refused_and_others_normalised(self) -> None:
        with pytest.raises(InvalidRequest):
            normalise_send_time(datetime(2026, 12, 7, 9), now=NOW, field_name="scheduled_at")
        with pytest.raises(InvalidRequest):
            normalise_send_time(NOW + timedelta(days=30, seconds=1), now=NOW, field_name="x")
        local = datetime.fromisoformat("2026-12-07T09:00:00+01:00")
        assert normalise_send_time(local, now=NOW, field_name="x") == _utc(2026, 12, 7, 8)

    def test_the_queue_delay_rounds_and_stays_within_sqs_limits(self) -> None:
        assert queue_delay_seconds(NOW + timedelta(seconds=29.2), NOW) == 29
        assert queue_delay_seconds(NOW + timedelta(seconds=29.5), NOW) == 30
        assert queue_delay_seconds(NOW - timedelta(seconds=5), NOW) == 0
        assert queue_delay_seconds(NOW + timedelta(hours=1), NOW) == 900


class TestRequestTimes:
    @pytest.mark.parametrize(
        ("value", "code"),
        [
            ("2026-12-24T09:00:00", "naive_datetime"),
            ("0001-01-01T00:00:00+14:00", "datetime_out_of_range"),
            ("9999-12-31T23:59:59-14:00", "datetime_out_of_range"),
            (1_800_000_000, "invalid_datetime"),
            ("2026-02-30T09:00:00Z", "invalid_datetime"),
            ("2026-12-24 09:00:00+01:00 ", "invalid_datetime"),
        ],
    )
    def test_scheduled_at_must_be_an_rfc3339_time_with_an_offset(
        self, value: object, code: str
    ) -> None:
        from pydantic import ValidationError

        from mailroom.domain.commands import SendRequest

        with pytest.raises(ValidationError) as refused:
            SendRequest.model_validate(
                {"template": "welcome", "to": "a@example.com", "scheduled_at": value}
            )
        assert refused.value.errors()[0]["type"] == code

    def test_nanoseconds_are_cut_and_lowercase_letters_read(self) -> None:
        from mailroom.domain.commands import SendRequest

        request = SendRequest.model_validate(
            {
                "template": "welcome",
                "to": "a@example.com",
                "scheduled_at": "2026-12-24t09:00:00.123456789z",
            }
        )
        assert request.scheduled_at == datetime(2026, 12, 24, 9, 0, 0, 123456, tzinfo=UTC)
