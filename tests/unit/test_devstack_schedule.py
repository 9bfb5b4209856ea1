"""The local runner reads the template's Schedule events and runs them on that period."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from devstack.lambda_runtime import LocalFunction
from devstack.scheduler import Scheduler
from devstack.template import ScheduleTrigger, load_stack, rate_seconds

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def test_the_reconciler_and_scheduler_run_every_minute_in_the_template() -> None:
    # GIVEN the real template, as the local runner reads it
    stack = load_stack(TEMPLATE, stack_name="mailroom-local", region="us-east-1")
    # THEN the reconciler and the webhook tick (EventBridge rules) and the
    # scheduler (EventBridge Scheduler, ScheduleV2's ScheduleExpression), the
    # tracking consumer's safety net and the analytics roll-up (issue 21) have
    # their one-minute schedules, the sending-domain re-check (issue 16) its
    # hourly one, and nothing else has one
    scheduled = {spec.logical_id: spec.schedules for spec in stack.functions if spec.schedules}
    for name in (
        "ReconcilerFunction",
        "WebhookTickFunction",
        "SchedulerFunction",
        "TrackingIngestFunction",
        "AnalyticsFunction",
    ):
        (trigger,) = scheduled.pop(name)
        assert (trigger.expression, trigger.period_seconds, trigger.enabled) == (
            "rate(1 minute)",
            60,
            True,
        )
    (recheck,) = scheduled.pop("DomainChecksFunction")
    assert (recheck.expression, recheck.period_seconds) == ("rate(1 hour)", 3600)
    assert scheduled == {}


def test_rate_expressions_and_what_is_not_one() -> None:
    assert [rate_seconds(e) for e in ("rate(1 minute)", "rate(5 minutes)", "rate(2 hours)")] == [
        60,
        300,
        7200,
    ]
    assert rate_seconds("cron(0 * * * ? *)") is None


def test_the_scheduler_invokes_with_a_scheduled_event_and_stops() -> None:
    # GIVEN a function that records what it is invoked with
    stack = load_stack(TEMPLATE, stack_name="mailroom-local", region="us-east-1")
    spec = next(s for s in stack.functions if s.logical_id == "ReconcilerFunction")
    events: list[dict[str, Any]] = []
    called = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
        events.append(event)
        called.set()
        return {"requeued": 0}

    function = LocalFunction(spec, handler, region="us-east-1", lock=threading.Lock())
    trigger = ScheduleTrigger("Reconcile", "rate(1 minute)", 60, True)
    # WHEN it runs on a short period (the template's minute, shortened for the test)
    scheduler = Scheduler(trigger, function, region="us-east-1", period_seconds=0.05)
    scheduler.start()
    assert called.wait(timeout=10)
    # THEN stopping waits for it, and the event is EventBridge's
    assert scheduler.stop(timeout=10)
    assert events[0]["detail-type"] == "Scheduled Event"
    assert events[0]["source"] == "aws.events"
