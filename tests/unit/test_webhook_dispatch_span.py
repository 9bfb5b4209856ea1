"""Issue 23: a webhook dispatcher batch is one span of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mailroom.adapters import tracing
from mailroom.entrypoints.webhook_dispatcher import process_webhook_batch


class RecordingDispatcher:
    def __init__(self) -> None:
        self.dispatched: list[list[int]] = []

    def dispatch(self, ids: list[int]) -> SimpleNamespace:
        self.dispatched.append(list(ids))
        return SimpleNamespace(sent=len(ids))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


def _record(message_id: str, ids: list[int]) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": "h",
        "body": json.dumps({"delivery_ids": ids}),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
    }


def test_a_dispatcher_batch_is_one_span_naming_its_deliveries(
    spans: InMemorySpanExporter,
) -> None:
    # GIVEN two queue records carrying three deliveries (the relay afterwards fails harmlessly)
    dispatcher = RecordingDispatcher()
    services: Any = SimpleNamespace(webhook_dispatcher=dispatcher)
    event = {"Records": [_record("a", [1, 2]), _record("b", [3])]}
    # WHEN the dispatcher function handles them
    answer = process_webhook_batch(event, SimpleNamespace(), services)  # type: ignore[arg-type]
    # THEN they were dispatched together, under one webhook.dispatch span
    assert answer["batchItemFailures"] == []
    assert dispatcher.dispatched == [[1, 2, 3]]
    (span,) = [s for s in spans.get_finished_spans() if s.name == "webhook.dispatch"]
    assert span.attributes is not None
    assert span.attributes["deliveries"] == 3
