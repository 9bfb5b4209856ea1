"""Issue 23: the benches' observability switch, read from the environment.

``MAILROOM_BENCH_OBSERVABILITY=on`` records metrics as EMF lines (Lambda's
backend) and spans through the OpenTelemetry SDK's BatchSpanProcessor into
an exporter that encodes each batch as OTLP protobuf and drops the bytes:
everything tracing costs the function but the collector's socket. Traces are
sampled as deployed (TRACING_SAMPLE_RATIO's default) unless
``MAILROOM_BENCH_TRACE_RATIO`` says otherwise.
``off`` turns both off. Unset, the settings' defaults apply (EMF on, tracing
off), as before issue 23.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

SWITCH = "MAILROOM_BENCH_OBSERVABILITY"
RATIO = "MAILROOM_BENCH_TRACE_RATIO"


def apply() -> str | None:
    """Set what the switch says (before the services are built); the switch's value."""
    switch = os.environ.get(SWITCH)
    if switch == "off":
        os.environ["METRICS_BACKEND"] = "off"
        os.environ["TRACING_EXPORTER"] = "off"
    elif switch == "on":
        os.environ["METRICS_BACKEND"] = "emf"
        os.environ["TRACING_EXPORTER"] = "off"  # enabled below, with the encoding exporter
        _enable_tracing()
    return switch


def _enable_tracing() -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from mailroom.adapters import tracing

    class EncodingExporter(SpanExporter):
        """OTLP/HTTP's protobuf body, built and dropped."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    from mailroom.config import Settings

    # The deployed default (TRACING_SAMPLE_RATIO), unless the bench is told
    # another: MAILROOM_BENCH_TRACE_RATIO=1 records every trace.
    ratio = float(os.environ.get(RATIO, Settings.model_fields["tracing_sample_ratio"].default))
    provider: Any = TracerProvider(
        sampler=tracing.sampler(ratio), id_generator=tracing.id_generator()
    )
    provider.add_span_processor(BatchSpanProcessor(EncodingExporter()))
    tracing.enable(provider, ratio)
