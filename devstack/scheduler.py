"""Runs a function on its template ``Schedule`` the way EventBridge would (issue 7)."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from devstack.lambda_runtime import LocalFunction
from devstack.template import ScheduleTrigger

log = logging.getLogger("devstack.scheduler")


def scheduled_event(trigger: ScheduleTrigger, *, region: str, now: datetime) -> dict[str, Any]:
    """EventBridge's "Scheduled Event" as a Lambda receives it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:000000000000:rule/{trigger.event_name}"],
        "detail": {},
    }


class Scheduler:
    """Invokes ``function`` every ``trigger.period_seconds``, the first time one period in.

    A stop waits for an invocation in progress (up to the function's timeout)
    and starts no new one.
    """

    def __init__(
        self,
        trigger: ScheduleTrigger,
        function: LocalFunction,
        *,
        region: str,
        period_seconds: float | None = None,
    ) -> None:
        self._trigger = trigger
        self._function = function
        self._region = region
        self._period = period_seconds if period_seconds is not None else trigger.period_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"schedule-{function.name}", daemon=True
        )
        self.invocations = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        self._stopping.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.wait(self._period):
            event = scheduled_event(self._trigger, region=self._region, now=datetime.now(UTC))
            try:
                invocation = self._function.invoke(event)
            except Exception:
                # EventBridge does not retry a failed scheduled run; the next one comes anyway.
                log.exception("%s (%s) raised", self._function.name, self._trigger.expression)
                continue
            self.invocations += 1
            log.info(
                "%s (%s): %s (%.0f ms)",
                self._function.name,
                self._trigger.expression,
                invocation.result,
                invocation.duration_ms,
            )
