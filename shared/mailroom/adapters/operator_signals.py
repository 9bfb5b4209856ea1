"""What operators are told: log lines with stable keys, and CloudWatch metrics.

An alarm is something a person must fix (a provider's credentials were
refused). A notice is a state change worth seeing on a dashboard (a circuit
breaker opened). Both carry a stable ``key``: it is the log field operators
filter on and the metric name their CloudWatch alarms watch, so renaming one
breaks alerting; add new keys instead.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)


class SignalKey(StrEnum):
    # Alarms: a provider refused our credentials or sender; the send failed over.
    PROVIDER_CONFIG_ERROR = "provider_config_error"
    # Alarms: a message whose retries ran out could not be put on the DLQ (its
    # row still reads failed, with the reason).
    DEAD_LETTER_SEND_FAILED = "dead_letter_send_failed"
    # Notices: a provider's circuit breaker changed state.
    BREAKER_STATE_CHANGED = "breaker_state_changed"
    # Notices: a message ran out of retries and went to the DLQ.
    MESSAGE_DEAD_LETTERED = "message_dead_lettered"


class OperatorSignals(abc.ABC):
    @abc.abstractmethod
    def alarm(
        self,
        key: SignalKey,
        message: str,
        *,
        dimensions: Mapping[str, str],
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Something an operator must fix: a log line at ERROR and a count metric."""

    @abc.abstractmethod
    def notice(
        self,
        key: SignalKey,
        message: str,
        *,
        dimensions: Mapping[str, str],
        context: Mapping[str, Any] | None = None,
        count: bool = True,
    ) -> None:
        """A change worth seeing: a log line at WARNING and, if ``count``, a metric."""


class PowertoolsSignals(OperatorSignals):
    """JSON log lines through the functions' Powertools logger, metrics as EMF.

    Each signal is flushed at once as its own EMF document (the function's own
    Metrics, if it ever gets some, keep their batch). POWERTOOLS_METRICS_DISABLED
    silences the metrics outside Lambda.
    """

    def __init__(self, logger: Logger, *, namespace: str) -> None:
        self._logger = logger
        self._namespace = namespace

    def alarm(
        self,
        key: SignalKey,
        message: str,
        *,
        dimensions: Mapping[str, str],
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self._logger.error(message, extra={"alarm": key.value, **dimensions, **(context or {})})
        self._count(key, dimensions)

    def notice(
        self,
        key: SignalKey,
        message: str,
        *,
        dimensions: Mapping[str, str],
        context: Mapping[str, Any] | None = None,
        count: bool = True,
    ) -> None:
        self._logger.warning(message, extra={"signal": key.value, **dimensions, **(context or {})})
        if count:
            self._count(key, dimensions)

    def _count(self, key: SignalKey, dimensions: Mapping[str, str]) -> None:
        metrics = AmazonCloudWatchEMFProvider(namespace=self._namespace)
        metrics.add_metric(name=key.value, unit=MetricUnit.Count, value=1)
        for name, value in dimensions.items():
            metrics.add_dimension(name=name, value=value)
        metrics.flush_metrics()
