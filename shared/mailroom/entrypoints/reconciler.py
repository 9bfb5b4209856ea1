"""The scheduled reconciler: one pass over stuck messages (services/reconciler.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import Services
from mailroom.entrypoints.observability import logger
from mailroom.services.reconciler import ReconcilePolicy, reconcile


def run_reconciler(
    event: dict[str, Any], context: LambdaContext, services: Services
) -> dict[str, Any]:
    settings = services.settings
    policy = ReconcilePolicy(
        stale_after=timedelta(seconds=settings.reconcile_stale_seconds),
        max_attempts=settings.max_send_attempts,
        max_claims=settings.reconcile_max_claims,
        batch_size=settings.reconcile_batch_size,
    )
    report = reconcile(services.uow(), services.queue, policy, now=datetime.now(UTC))
    counts = dataclasses.asdict(report)
    logger.info("reconciled", extra=counts)
    return counts
