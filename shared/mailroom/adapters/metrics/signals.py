"""Operator signals that also move the metrics: breaker changes become a gauge and a counter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailroom.adapters.metrics.base import Metrics
from mailroom.adapters.operator_signals import OperatorSignals, SignalKey


class MeteredSignals(OperatorSignals):
    """``inner``'s log lines and alarms, and the facade's breaker metrics beside them."""

    def __init__(self, inner: OperatorSignals, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics

    def alarm(
        self,
        key: SignalKey,
        message: str,
        *,
        dimensions: Mapping[str, str],
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.inner.alarm(key, message, dimensions=dimensions, context=context)

    def notice(
        self,
        key: SignalKey,
        message: str,
        *,
        dimensions: Mapping[str, str],
        context: Mapping[str, Any] | None = None,
        count: bool = True,
    ) -> None:
        self.inner.notice(key, message, dimensions=dimensions, context=context, count=count)
        if key is SignalKey.BREAKER_STATE_CHANGED:
            provider, state = dimensions.get("provider", "unknown"), dimensions.get("state", "")
            # ``count``: this process made the change (others only observed it).
            if count:
                self._metrics.breaker_changed(provider, state)
            else:
                self._metrics.breaker_state(provider, state)
