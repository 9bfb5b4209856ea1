"""The tracing adapter: off costs nothing and imports nothing; trace contexts are read exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mailroom.adapters import tracing

REPO = Path(__file__).resolve().parents[2]


def test_off_the_spans_are_one_shared_no_op_and_opentelemetry_is_not_imported() -> None:
    # GIVEN a fresh interpreter that imports the worker's and the API's code
    code = (
        "import sys; sys.path[:0] = ['shared', '.'];"
        "import mailroom.entrypoints.worker, mailroom.entrypoints.api, mailroom.services.sending;"
        "from mailroom.adapters import tracing;"
        "assert tracing.span('a') is tracing.span('b');"
        "assert tracing.record_parent(None, 'ab' * 16) is None;"
        "print(sorted(m for m in sys.modules if m.startswith(OURS)))"
    ).replace("OURS", repr(("opentelemetry.sdk.trace", "opentelemetry.exporter")))
    # WHEN it runs with tracing off (the default)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    # THEN no OpenTelemetry tracing module was loaded (redis-py 8 loads the SDK's
    # metrics when the SDK is installed, as in the dev venv: not ours)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_off_the_queue_still_carries_a_traceparent_naming_the_trace() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.current_traceparent(trace_id) == f"00-{trace_id}-4bf92f3577b34da6-00"
    # A trace id that is not W3C's (an old X-Ray root) carries none
    assert tracing.current_traceparent("1-6741a2b3-5c1f0e2d9a8b7c6d5e4f3a2b") is None


def test_an_xray_header_becomes_the_same_trace_in_w3c_form() -> None:
    header = "Root=1-6741a2b3-5c1f0e2d9a8b7c6d5e4f3a2b;Parent=53995c3f42cd8ad8;Sampled=1"
    assert tracing.xray_traceparent(header) == (
        "00-6741a2b35c1f0e2d9a8b7c6d5e4f3a2b-53995c3f42cd8ad8-01"
    )
    # Without a parent the trace id is kept; a made-up parent stands in
    assert tracing.xray_traceparent("Root=1-6741a2b3-5c1f0e2d9a8b7c6d5e4f3a2b") == (
        "00-6741a2b35c1f0e2d9a8b7c6d5e4f3a2b-9a8b7c6d5e4f3a2b-00"
    )
    assert tracing.xray_traceparent("Root=2-abc") is None
    assert tracing.xray_traceparent("garbage") is None


def test_the_sampler_follows_a_sampled_caller_and_decides_the_rest_by_trace_id() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import format_trace_id

    provider = TracerProvider(sampler=tracing.sampler(0.0))
    tracing.enable(provider, 0.0)
    try:
        # GIVEN a ratio of 0: nothing is recorded unless a caller decided to
        sampled = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        undecided = "00-" + "ef" * 16 + "-" + "cd" * 8 + "-00"
        with tracing.root_span("followed", traceparent=sampled):
            assert tracing.current_trace_id() == "ab" * 16
            # AND stage spans inside a recorded trace are recorded
            with tracing.span("stage") as stage:
                assert stage.is_recording()
        with tracing.root_span("dropped", traceparent=undecided):
            # THEN a stage inside a trace sampled out costs nothing at all
            assert tracing.span("stage") is tracing.span("other")
            # AND the trace's id is still Mailroom's trace id
            assert tracing.current_trace_id() == "ef" * 16
        # AND a new trace, sampled out, still has an id
        with tracing.root_span("new"):
            new = tracing.current_trace_id()
            assert new is not None
            assert len(new) == 32
        assert format_trace_id(int("ab" * 16, 16)) == "ab" * 16
    finally:
        tracing.disable()


def test_new_traces_are_recorded_exactly_when_their_own_id_says_so() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    # GIVEN half of all traces kept, decided before the SDK and again by its sampler
    provider = TracerProvider(sampler=tracing.sampler(0.5), id_generator=tracing.id_generator())
    tracing.enable(provider, 0.5)
    kept = 0
    try:
        for _ in range(64):
            # WHEN a new trace starts
            with tracing.root_span("new"):
                trace_id = tracing.current_trace_id()
                assert trace_id is not None
                recording = trace.get_current_span().is_recording()
            # THEN it is recorded iff its id's low 64 bits fall under the bound,
            # the SDK's span carrying the very id the decision was made on
            assert recording == (int(trace_id, 16) & ((1 << 64) - 1) < 1 << 63)
            kept += recording
    finally:
        tracing.disable()
    assert 0 < kept < 64
