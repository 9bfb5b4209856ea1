"""The scheduled re-check of sending domains (issue 16): one bounded pass per tick."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import Services
from mailroom.domain.sending_domains import DomainStatus
from mailroom.entrypoints.observability import logger
from mailroom.services.sending_domains import recheck_due


def run_domain_checks(
    event: dict[str, Any], context: LambdaContext | None, services: Services
) -> dict[str, Any]:
    settings = services.settings
    outcomes = recheck_due(
        services.uow(),
        services.dns,
        services.domain_policy.plan,
        interval_seconds=settings.domain_recheck_seconds,
        batch_size=settings.domain_recheck_batch_size,
        now=datetime.now(UTC),
    )
    counts = {
        "checked": len(outcomes),
        "verified": sum(o.domain.status is DomainStatus.VERIFIED for o in outcomes),
        "failing": sum(o.domain.status is DomainStatus.FAILING for o in outcomes),
        "retry_later": sum(o.retry_later for o in outcomes),
    }
    failing = [o.domain.domain for o in outcomes if o.domain.status is DomainStatus.FAILING]
    if failing:
        # The audit log says so per domain (domain.failing); this is for the operator.
        logger.warning("sending domains failing their DNS check", extra={"domains": failing})
    logger.info("domains re-checked", extra=counts)
    return counts
