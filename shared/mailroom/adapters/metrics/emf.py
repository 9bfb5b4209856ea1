"""Metrics as CloudWatch Embedded Metric Format lines, for Lambda.

Recorded values wait in memory and go out as one JSON line per dimension set
when the invocation ends (``flush``), so a send costs one ``json.dumps`` and
one write however many things it counted. Written here rather than through
Powertools' ``AmazonCloudWatchEMFProvider`` (which ``operator_signals`` keeps
using for its alarms): that provider puts one dimension set in a document,
and every metric here also declares the empty set, so CloudWatch keeps a
total beside the per-provider (per-error-type...) series and the alarms in
template.yaml can watch the total. The format:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Final

from mailroom.adapters.metrics.base import BREAKER_STATE_VALUES, MetricName, Metrics

# The specification's limits: 100 values per metric, 100 metrics per document.
MAX_VALUES: Final = 100
# Flushed without waiting for the invocation's end past this many values,
# so a function that never flushes cannot grow without bound.
MAX_PENDING: Final = 1000

Dimensions = tuple[tuple[str, str], ...]


def _emf_name(name: MetricName) -> str:
    return name.value.removeprefix("mailroom_").removesuffix("_total")


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")


class EmfMetrics(Metrics):
    """EMF lines on stdout (Lambda sends stdout to CloudWatch Logs, which extracts them)."""

    def __init__(
        self,
        namespace: str,
        *,
        client_label: bool = False,
        write: Callable[[str], None] = _stdout,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._namespace = namespace
        self._client_label = client_label
        self._write = write
        self._clock = clock
        # Per dimension set: metric name -> (unit, values); counters keep one sum.
        self._pending: dict[Dimensions, dict[str, tuple[str, list[float]]]] = {}
        self._count = 0

    def _record(
        self, name: MetricName, unit: str, value: float, dims: Dimensions = (), *, add: bool = True
    ) -> None:
        """Count (``add``: one summed value) or sample (every value kept) one metric."""
        metrics = self._pending.setdefault(dims, {})
        entry = metrics.get(_emf_name(name))
        if entry is None:
            metrics[_emf_name(name)] = (unit, [value])
        elif add:
            entry[1][0] += value
        else:
            entry[1].append(value)
        self._count += 1
        if self._count >= MAX_PENDING:
            self.flush()

    def _client(self, client_id: str | None) -> Dimensions:
        return (("client", client_id or "none"),) if self._client_label else ()

    def email_queued(self, *, client_id: str | None = None) -> None:
        self._record(MetricName.EMAILS_QUEUED, "Count", 1, self._client(client_id))

    def email_sent(self, provider: str, seconds: float, *, client_id: str | None = None) -> None:
        dims = (("provider", provider),)
        self._record(MetricName.EMAILS_SENT, "Count", 1, dims + self._client(client_id))
        self._record(MetricName.SEND_LATENCY, "Seconds", seconds, dims, add=False)

    def email_failed(self, error_type: str, *, client_id: str | None = None) -> None:
        dims = (("error_type", error_type), *self._client(client_id))
        self._record(MetricName.EMAILS_FAILED, "Count", 1, dims)

    def provider_error(self, provider: str, kind: str) -> None:
        dims = (("provider", provider), ("kind", kind))
        self._record(MetricName.PROVIDER_ERRORS, "Count", 1, dims)

    def breaker_changed(self, provider: str, state: str) -> None:
        dims = (("provider", provider), ("state", state))
        self._record(MetricName.BREAKER_TRANSITIONS, "Count", 1, dims)
        self.breaker_state(provider, state)

    def breaker_state(self, provider: str, state: str) -> None:
        value = BREAKER_STATE_VALUES.get(state, -1.0)
        dims = (("provider", provider),)
        self._record(MetricName.BREAKER_STATE, "None", value, dims, add=False)

    def rate_limited(self, code: str) -> None:
        self._record(MetricName.RATE_LIMIT_HITS, "Count", 1, (("code", code),))

    def webhook_delivery(self, provider: str, outcome: str) -> None:
        dims = (("provider", provider), ("outcome", outcome))
        self._record(MetricName.WEBHOOK_DELIVERIES, "Count", 1, dims)

    def event_ingested(self, event_type: str, count: int = 1) -> None:
        self._record(MetricName.EVENTS_INGESTED, "Count", count, (("type", event_type),))

    def reputation_changed(self, state: str) -> None:
        self._record(MetricName.REPUTATION_CHANGES, "Count", 1, (("state", state),))

    def api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        # API Gateway's own Latency, 5XXError and Count metrics already cover
        # each method in Lambda (the alarms use them); only 429s are ours.
        return

    def queue_depth(self, queue: str, depth: int | None, oldest_age_seconds: float | None) -> None:
        dims = (("queue", queue),)
        if depth is not None:
            self._record(MetricName.QUEUE_DEPTH, "Count", depth, dims, add=False)
        if oldest_age_seconds is not None:
            self._record(
                MetricName.QUEUE_OLDEST_AGE, "Seconds", oldest_age_seconds, dims, add=False
            )

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._count = self._pending, {}, 0
        timestamp = int(self._clock() * 1000)
        for dims, metrics in pending.items():
            for document in self._documents(timestamp, dims, metrics):
                self._write(json.dumps(document, separators=(",", ":")))

    def _documents(
        self, timestamp: int, dims: Dimensions, metrics: dict[str, tuple[str, list[float]]]
    ) -> list[dict[str, object]]:
        names = [name for name, _ in dims]
        # Each series by its labels, and the total across them (the empty set).
        dimension_sets = [names, []] if names else [[]]
        documents: list[dict[str, object]] = []
        chunk = 0
        while True:
            document: dict[str, object] = dict(dims)
            definitions = []
            more = False
            for name, (unit, values) in metrics.items():
                part = values[chunk * MAX_VALUES : (chunk + 1) * MAX_VALUES]
                if not part:
                    continue
                more = more or len(values) > (chunk + 1) * MAX_VALUES
                definitions.append({"Name": name, "Unit": unit})
                document[name] = part[0] if len(part) == 1 else part
            if not definitions:
                break
            document["_aws"] = {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [
                    {
                        "Namespace": self._namespace,
                        "Dimensions": dimension_sets,
                        "Metrics": definitions,
                    }
                ],
            }
            documents.append(document)
            if not more:
                break
            chunk += 1
        return documents
