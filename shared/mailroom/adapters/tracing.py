"""OpenTelemetry spans per stage, and the W3C ``traceparent`` that carries them across SQS.

Off by default: ``span`` is then a shared no-op context manager and
OpenTelemetry is not even imported (cold start, issue 8). ``configure``
turns it on from settings (an OTLP/HTTP or console exporter); tests call
``enable`` with a provider of their own (the SDK's in-memory exporter).

Mailroom's ``trace_id`` (the messages' column, the log key, the SQS
attribute) is the trace's id: 32 lowercase hex digits, as W3C and X-Ray
(without its dashes) write it, so logs and traces join on it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Tracer, TracerProvider

    from mailroom.config import Settings

log = logging.getLogger(__name__)
TRACEPARENT_ATTRIBUTE: Final = "traceparent"
TRACER_NAME: Final = "mailroom"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")

_tracer: Tracer | None = None
_current_span: Any = None  # opentelemetry.trace.get_current_span, once enabled
_NO_SPAN: Final = contextlib.nullcontext()


def enabled() -> bool:
    return _tracer is not None


def enable(provider: TracerProvider) -> None:
    """Record spans through ``provider`` from now on (this process)."""
    global _tracer, _current_span
    from opentelemetry import trace

    _current_span = trace.get_current_span
    _tracer = provider.get_tracer(TRACER_NAME)


def disable() -> None:
    global _tracer
    _tracer = None


def sampler(ratio: float) -> Any:
    """Follow a caller that decided to sample; otherwise record ``ratio`` of the traces.

    The ratio applies to the trace id, so the API and the worker decide the
    same for one message without telling each other (a ``traceparent`` whose
    flags say "not sampled" is decided again, by the same rule).
    """
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    by_ratio = TraceIdRatioBased(ratio)
    return ParentBased(root=by_ratio, remote_parent_not_sampled=by_ratio)


def configure(settings: Settings) -> None:
    """Turn tracing on as TRACING_EXPORTER says: ``off`` (default), ``console`` or ``otlp``."""
    if settings.tracing_exporter == "off" or enabled():
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
        SpanExporter,
    )

    provider = SdkTracerProvider(
        sampler=sampler(settings.tracing_sample_ratio),
        resource=Resource.create({"service.name": settings.tracing_service_name}),
    )
    if settings.tracing_exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            # In Lambda the ADOT layer brings the exporter (template.yaml, AdotLayerArn).
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("TRACING_EXPORTER=otlp but no OTLP exporter is installed: tracing is off")
            return
        exporter: SpanExporter = OTLPSpanExporter(endpoint=settings.otlp_traces_endpoint)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    enable(provider)


def span(name: str, **attributes: str | int | bool) -> contextlib.AbstractContextManager[Any]:
    """A span for one stage, child of the current one; a no-op while tracing is off.

    Also a no-op inside a trace that is not recorded (sampled out): a stage
    span there would cost a sampling decision and a context switch for nothing.
    """
    if _tracer is None or not _current_span().is_recording():
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes)


@contextlib.contextmanager
def root_span(
    name: str,
    *,
    parent: Context | None = None,
    links: Sequence[Link] = (),
    **attributes: str | int | bool,
) -> Iterator[None]:
    """A span under a remote ``parent`` (or a new trace), with ``links``; no-op while off."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, context=parent, links=links, attributes=attributes):
        yield


def current_trace_id() -> str | None:
    """The trace id of the span in progress, as 32 hex digits; None if none records."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def current_traceparent(trace_id: str) -> str | None:
    """The ``traceparent`` naming the current span, or only ``trace_id`` while tracing is off.

    Off, the parent id is made up (a valid one is required): the worker's
    spans, if it traces, still join the trace by its id.
    """
    if _tracer is not None:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    if not _TRACE_ID.match(trace_id):
        return None
    # Flags 00: not decided here; a traced worker decides by the trace id.
    return f"00-{trace_id}-{trace_id[:16]}-00"


def remote_context(traceparent: str | None) -> Context | None:
    """The remote parent a ``traceparent`` names; None if it is absent or malformed."""
    if _tracer is None or not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip())
    if match is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if not trace_id or not span_id:
        return None
    parent = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match.group(3), 16))
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def xray_traceparent(header: str) -> str | None:
    """An X-Ray ``Root=1-xxxxxxxx-yyyy...;Parent=zzzz`` header as a ``traceparent``."""
    fields = dict(part.split("=", 1) for part in header.replace(" ", "").split(";") if "=" in part)
    root, parent = fields.get("Root", ""), fields.get("Parent", "")
    pieces = root.split("-")
    if len(pieces) != 3 or pieces[0] != "1":
        return None
    trace_id = (pieces[1] + pieces[2]).lower()
    # Sampled=1 is followed; 0, ? or none is decided here by the trace id.
    sampled = "01" if fields.get("Sampled") == "1" else "00"
    if not _TRACE_ID.match(trace_id):
        return None
    # No Parent (a client that only names the trace): a made-up parent id
    # keeps the trace's id, which is what logs and rows carry.
    parent = parent.lower() if re.match(r"^[0-9a-fA-F]{16}$", parent) else trace_id[16:]
    return f"00-{trace_id}-{parent}-{sampled}"


def link_to(context: Context) -> Link:
    from opentelemetry import trace
    from opentelemetry.trace import Link

    return Link(trace.get_current_span(context).get_span_context())


def incoming_parent(headers: Mapping[str, str]) -> Context | None:
    """The remote parent an HTTP request names (``traceparent``, else ``X-Amzn-Trace-Id``)."""
    if _tracer is None:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    traceparent = lowered.get("traceparent")
    if not traceparent and lowered.get("x-amzn-trace-id"):
        traceparent = xray_traceparent(lowered["x-amzn-trace-id"])
    return remote_context(traceparent)


def record_parent(traceparent: str | None, trace_id: str | None) -> Context | None:
    """A queue record's remote parent: its ``traceparent``, else its bare trace id."""
    if _tracer is None:
        return None
    context = remote_context(traceparent)
    if context is None and trace_id and _TRACE_ID.match(trace_id):
        context = remote_context(f"00-{trace_id}-{trace_id[:16]}-00")
    return context


def batch_span(
    name: str, parents: Sequence[Context | None]
) -> contextlib.AbstractContextManager[Any]:
    """One span for a batch of queue records.

    Records of one trace: the span continues it. Records of several: the
    span starts its own trace with one link per record, so each message's
    trace reaches the batch's stages (claim, render, send, record).
    """
    if _tracer is None:
        return _NO_SPAN
    from opentelemetry import trace

    known = [parent for parent in parents if parent is not None]
    trace_ids = {trace.get_current_span(parent).get_span_context().trace_id for parent in known}
    if len(trace_ids) == 1 and len(known) == len(parents):
        return root_span(name, parent=known[0], records=len(parents))
    return root_span(
        name,
        parent=_new_trace(),
        links=[link_to(parent) for parent in known],
        records=len(parents),
    )


def _new_trace() -> Context:
    """An empty context: the span under it starts a trace of its own."""
    from opentelemetry.context import Context

    return Context()
