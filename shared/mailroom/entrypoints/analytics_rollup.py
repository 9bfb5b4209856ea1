"""The scheduled analytics roll-up: count queued events, then judge reputations (issue 21)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import Services
from mailroom.entrypoints.observability import logger
from mailroom.services import analytics, reputation


def run_roll_up(
    event: dict[str, Any], context: LambdaContext, services: Services
) -> dict[str, Any]:
    rolled = analytics.roll_up(services.uow())
    changes = reputation.evaluate(
        services.uow(),
        services.credential_versions,
        services.metrics,
        now=datetime.now(UTC),
    )
    services.metrics.flush()
    counts = {**dataclasses.asdict(rolled), "reputation_changes": len(changes)}
    logger.info("analytics rolled up", extra=counts)
    return counts
