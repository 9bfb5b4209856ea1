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
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
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
_LOW_64: Final = (1 << 64) - 1
# Traces whose low 64 bits fall under this are recorded (TraceIdRatioBased's rule).
_bound = 1 << 64
# The trace in progress when it was sampled out (no SDK span exists for it).
_dropped: ContextVar[str | None] = ContextVar("mailroom_dropped_trace", default=None)
# The id the next root span's trace must get (the SDK asks the id generator).
_next_trace_id: ContextVar[int | None] = ContextVar("mailroom_next_trace_id", default=None)


def enabled() -> bool:
    return _tracer is not None


def enable(provider: TracerProvider, ratio: float = 1.0) -> None:
    """Record spans through ``provider`` from now on (this process).

    ``ratio`` must be the one ``provider``'s sampler applies (``sampler``):
    root spans decide it here first, so a trace sampled out never reaches
    the SDK (a span the SDK drops still costs ids, a sampler call and two
    context switches: most of what the worker paid per email at 5 %).
    """
    global _tracer, _current_span, _bound
    from opentelemetry import trace

    _current_span = trace.get_current_span
    _bound = round(ratio * (1 << 64))
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
        id_generator=id_generator(),
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
    enable(provider, settings.tracing_sample_ratio)


def id_generator() -> Any:
    """Random ids, except a new trace's id when ``root_span`` chose it (and sampled by it)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ChosenTraceIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            return _next_trace_id.get() or super().generate_trace_id()

    return ChosenTraceIds()


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
    traceparent: str | None = None,
    links: Sequence[str | None] = (),
    **attributes: str | int | bool,
) -> Iterator[None]:
    """A span continuing ``traceparent`` (or starting a trace), linked to ``links``.

    A no-op while tracing is off, and while the trace is sampled out: then
    only its id is kept, for ``current_trace_id``.
    """
    if _tracer is None:
        yield
        return
    match = _TRACEPARENT.match(traceparent) if traceparent else None
    if match is not None:
        trace_id, sampled = int(match.group(1), 16), int(match.group(3), 16) & 1 == 1
    else:
        trace_id, sampled = random.getrandbits(128) or 1, False
    if not sampled and (trace_id & _LOW_64) >= _bound:
        dropped = _dropped.set(f"{trace_id:032x}")
        try:
            yield
        finally:
            _dropped.reset(dropped)
        return
    parent = remote_context(traceparent) if match is not None else _new_trace()
    chosen = _next_trace_id.set(None if match is not None else trace_id)
    released = False
    try:
        span_links = [link_to(context) for link in links if (context := remote_context(link))]
        with _tracer.start_as_current_span(
            name, context=parent, links=span_links, attributes=attributes
        ):
            # The SDK has taken the id: spans under this one get their own.
            _next_trace_id.reset(chosen)
            released = True
            yield
    finally:
        if not released:
            _next_trace_id.reset(chosen)


def current_trace_id() -> str | None:
    """The trace id in progress (recorded or sampled out), as 32 hex digits; None if none."""
    if _tracer is None:
        return None
    context = _current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else _dropped.get()


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


def incoming_parent(headers: Mapping[str, str]) -> str | None:
    """The trace an HTTP request names (``traceparent``, else ``X-Amzn-Trace-Id``), W3C form."""
    if _tracer is None:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    traceparent = lowered.get("traceparent", "").strip().lower()
    if _TRACEPARENT.match(traceparent):
        return traceparent
    if lowered.get("x-amzn-trace-id"):
        return xray_traceparent(lowered["x-amzn-trace-id"])
    return None


def record_parent(traceparent: str | None, trace_id: str | None) -> str | None:
    """A queue record's trace context: its ``traceparent``, else its bare trace id."""
    if _tracer is None:
        return None
    if traceparent and _TRACEPARENT.match(traceparent):
        return traceparent
    if trace_id and _TRACE_ID.match(trace_id):
        return f"00-{trace_id}-{trace_id[:16]}-00"
    return None


def batch_span(
    name: str, traceparents: Sequence[str | None]
) -> contextlib.AbstractContextManager[Any]:
    """One span for a batch of queue records.

    Records of one trace: the span continues it. Records of several: the
    span starts its own trace with one link per record, so each message's
    trace reaches the batch's stages (claim, render, send, record).
    """
    if _tracer is None:
        return _NO_SPAN
    trace_ids = {parent[3:35] if parent else None for parent in traceparents}
    if len(trace_ids) == 1 and None not in trace_ids:
        return root_span(name, traceparent=traceparents[0], records=len(traceparents))
    return root_span(name, links=traceparents, records=len(traceparents))


def _new_trace() -> Context:
    """An empty context: the span under it starts a trace of its own."""
    from opentelemetry.context import Context

    return Context()
