"""The scheduler function: one pass every minute (services/scheduler.py)."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import Services
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.schedules import schedule_sender
from mailroom.services.queues import release_requested
from mailroom.services.scheduler import SchedulerPolicy, scheduler_pass


def policy_of(services: Services) -> SchedulerPolicy:
    settings = services.settings
    return SchedulerPolicy(
        lookahead_seconds=settings.scheduler_lookahead_seconds,
        chunk_size=settings.scheduler_chunk_size,
        time_budget_seconds=settings.scheduler_time_budget_seconds,
        stale_seconds=settings.scheduler_stale_seconds,
        schedules_per_pass=settings.scheduler_schedules_per_pass,
    )


def run_scheduler(
    event: dict[str, Any], context: LambdaContext, services: Services
) -> dict[str, Any]:
    report = scheduler_pass(
        services.uow(),
        services.queue,
        schedule_sender(services),
        policy=policy_of(services),
        clock=services.clock,
        planner=services.planner_queue,
    )
    chunk_ms = [round(seconds * 1000, 1) for seconds in report.chunk_seconds]
    counts: dict[str, Any] = {
        "runs_started": report.runs_started,
        "runs_skipped": report.runs_skipped,
        "runs_failed": report.runs_failed,
        "enqueued": report.enqueued,
        "batches_released": report.batches_released,
        "refused": report.refused,
        "chunks": report.chunks,
        "max_chunk_ms": max(chunk_ms, default=0.0),
        "budget_exhausted": report.budget_exhausted,
    }
    counts["held_released"] = release_held_mail(context, services)
    logger.info("scheduler pass", extra=counts)
    return counts


# Left of the Lambda's time when the held mail's release starts no page.
RELEASE_MARGIN_SECONDS = 5.0


def release_held_mail(context: LambdaContext, services: Services) -> int:
    """Issue 20: resumed and draining queues' held mail, a page at a time, after the pass."""
    if not services.queue_routing:
        return 0  # no queues here (an in-memory unit of work)
    budget = min(
        services.settings.queue_release_budget_seconds,
        context.get_remaining_time_in_millis() / 1000 - RELEASE_MARGIN_SECONDS,
    )
    if budget <= 0:
        return 0
    report = release_requested(
        services.uow(),
        services.queue,
        page_size=services.settings.queue_release_page_size,
        deadline=time.monotonic() + budget,
    )
    return report.released
