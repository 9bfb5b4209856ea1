"""Metrics and traces on real parts: API handler → PostgreSQL + SQS (moto) → worker → SMTP.

The counters are read the way Prometheus reads them (the /metrics WSGI
application, parsed by prometheus-client's own parser); the spans through
the OpenTelemetry SDK's in-memory exporter.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from mailroom.adapters import tracing
from mailroom.adapters.breakers import ProviderBreakers
from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.metrics.prometheus import PrometheusMetrics
from mailroom.adapters.metrics.signals import MeteredSignals
from mailroom.adapters.providers.smtp import SmtpProvider
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.api import create_api, send_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.metrics_endpoint import metrics_app
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services.clients import RegisteredClient, register_client
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.integration.conftest import sqs_event
from tests.integration.provider_doubles import SwitchableSmtp
from tests.provider_fakes import ManualClock, RecordingSignals

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SAMPLE_PROPS = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())


class Stack:
    """The send API and the worker over real services, counting into one Prometheus registry."""

    def __init__(
        self, database_url: str, redis_url: str, queue_url: str, relay: SwitchableSmtp
    ) -> None:
        self.queue_url = queue_url
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            queue_url=queue_url,
            dead_letter_queue_url=queue_url + "-dlq",
            templates_dir=TEMPLATES,
            provider_order="smtp",
            # One try: a transient failure ends the message (and counts) at once.
            max_send_attempts=1,
            metrics_backend="prometheus",
        )
        self.metrics = PrometheusMetrics()
        self.signals = RecordingSignals()
        # The breaker's listener tells the metrics through MeteredSignals, as
        # bootstrap wires it when it builds the breakers itself.
        breakers = ProviderBreakers.in_redis(
            redis_url,
            MeteredSignals(self.signals, self.metrics),
            failure_threshold=2,
            cooldown_seconds=30,
            success_threshold=1,
            clock=ManualClock(),
        )
        self.services: Services = bootstrap(
            self.settings,
            metrics=self.metrics,
            providers={"smtp": SmtpProvider(relay.host, relay.port, timeout_seconds=2)},
            breakers=breakers,
            signals=self.signals,
        )
        self.client: RegisteredClient = register_client(
            self.services.uow(), self.services.hasher, name=f"acme-{uuid.uuid4().hex[:6]}"
        )
        self.api = create_api(
            [send_routes(lambda: self.services)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
            # As the send function has it: the gate authenticates first.
            client_gate=ClientGate(lambda: self.services),
            metrics=lambda: self.metrics,
        )
        self.scrape = metrics_app(lambda: self.services, refresh_seconds=0)
        self.sqs = boto3.client("sqs", region_name="us-east-1")

    def send(self, to: str = "ada@example.com", **headers: str) -> dict[str, Any]:
        event = load_event("send/send-welcome")
        with_headers(
            event,
            X_Api_Key=self.client.api_key,
            X_Api_Secret=self.client.api_secret,
            X_Amzn_Trace_Id=None,
            **headers,
        )
        with_body(event, {"template": "welcome", "to": to, "props": SAMPLE_PROPS})
        answer = self.api.resolve(event, FakeLambdaContext())
        assert answer["statusCode"] == 202, answer
        return answer

    def received(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return messages
            messages.extend(batch)

    def run_worker(self, received: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        received = received if received is not None else self.received()
        assert received, "nothing on the send queue"
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        event = sqs_event(received, arn["Attributes"]["QueueArn"])
        answer = process_send_batch(event, FakeLambdaContext("mailroom-worker"), self.services)
        for message in received:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return answer

    def counters(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of a scrape of /metrics, parsed by prometheus-client's own parser."""
        statuses: list[str] = []

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            statuses.append(status)

        body = b"".join(
            self.scrape({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics"}, start_response)
        )
        assert statuses == ["200 OK"]
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }


@pytest.fixture
def relay() -> Iterator[SwitchableSmtp]:
    server = SwitchableSmtp().start()
    yield server
    server.stop()


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, relay: SwitchableSmtp) -> Stack:
    url = database.engine.url.render_as_string(hide_password=False)
    return Stack(url, redis_url, queue_url, relay)


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def test_the_counters_move_by_exactly_what_happened(stack: Stack, relay: SwitchableSmtp) -> None:
    # GIVEN two good messages, one to an address the relay refuses (550), sent
    for to in ("ada@example.com", "bob@example.com", "reject-carol@example.com"):
        stack.send(to)
    # WHEN the worker takes them
    stack.run_worker()
    # AND then the relay goes down (421) and two more come
    relay.mode = "down"
    stack.send("dan@example.com")
    stack.send("eve@example.com")
    stack.run_worker()

    # THEN a scrape of /metrics says exactly that
    found = stack.counters()
    assert found[("mailroom_emails_queued_total", labels())] == 5
    assert found[("mailroom_emails_sent_total", labels(provider="smtp"))] == 2
    assert found[("mailroom_emails_failed_total", labels(error_type="permanent"))] == 1
    assert found[("mailroom_emails_failed_total", labels(error_type="transient"))] == 2
    errors = "mailroom_provider_errors_total"
    assert found[(errors, labels(provider="smtp", kind="permanent"))] == 1
    assert found[(errors, labels(provider="smtp", kind="transient"))] == 2
    # AND the breaker opened once (two transient failures), and reads open
    assert found[("mailroom_breaker_transitions_total", labels(provider="smtp", state="open"))] == 1
    assert found[("mailroom_breaker_state", labels(provider="smtp"))] == 2
    assert found[("mailroom_send_latency_seconds_count", labels(provider="smtp"))] == 2
    assert (
        found[
            ("mailroom_api_requests_total", labels(route="/v1/send", method="POST", status="2xx"))
        ]
        == 5
    )
    # AND the queue gauges were read on the scrape (the send queue is empty now)
    assert found[("mailroom_queue_depth", labels(queue="send"))] == 0
    # AND no label carries an address or an id
    assert not [key for key in found if any("@" in v or len(v) > 40 for _, v in key[1])]


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


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name == name]


def trace_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def test_one_messages_trace_joins_the_api_and_the_worker_through_the_sqs_attribute(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    # GIVEN a caller's W3C trace context
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    # WHEN it sends a message and the worker sends it
    answer = stack.send(traceparent=f"00-{trace_id}-{caller_span}-01")
    (record,) = stack.received()
    stack.run_worker([record])

    # THEN Mailroom's trace id is the trace's id, and the SQS message carries the context
    assert answer["multiValueHeaders"]["X-Trace-Id"] == [trace_id]
    attributes = record["MessageAttributes"]
    assert attributes["trace_id"]["StringValue"] == trace_id
    finished = spans.get_finished_spans()
    (enqueue,) = by_name(finished, "api.enqueue")
    assert enqueue.context is not None
    assert attributes["traceparent"]["StringValue"] == (
        f"00-{trace_id}-{enqueue.context.span_id:016x}-01"
    )
    # AND every stage of the API and of the worker is in that one trace
    stages = [
        "api.request",
        "api.authenticate",
        "api.validate",
        "api.insert",
        "api.enqueue",
        "worker.batch",
        "worker.claim",
        "worker.render",
        "worker.sign",
        "worker.send",
        "worker.record",
        "worker.message",
    ]
    for name in stages:
        found = by_name(finished, name)
        assert found, f"no {name} span"
        assert {trace_hex(span) for span in found} == {trace_id}, name
    # AND the API's span continues the caller's, the worker's continues the enqueue
    (request,) = by_name(finished, "api.request")
    assert request.parent is not None
    assert f"{request.parent.span_id:016x}" == caller_span
    (batch,) = by_name(finished, "worker.batch")
    assert batch.parent is not None
    assert batch.parent.span_id == enqueue.context.span_id
    assert batch.links == ()
    (send,) = by_name(finished, "worker.send")
    assert dict(send.attributes or {})["provider"] == "smtp"


def test_a_batch_mixing_traces_links_one_span_per_record(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    # GIVEN three messages sent in three different traces
    traces = [uuid.uuid4().hex for _ in range(3)]
    for trace_id in traces:
        stack.send(traceparent=f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01")
    received = stack.received()
    assert len(received) == 3
    spans.clear()

    # WHEN one worker invocation takes all three
    stack.run_worker(received)

    # THEN its batch span starts a trace of its own with one link per record
    finished = spans.get_finished_spans()
    (batch,) = by_name(finished, "worker.batch")
    assert trace_hex(batch) not in traces
    assert sorted(f"{link.context.trace_id:032x}" for link in batch.links) == sorted(traces)
    # AND each link names the span that enqueued that record
    enqueued = {
        message["MessageAttributes"]["traceparent"]["StringValue"].split("-")[2]
        for message in received
    }
    assert {f"{link.context.span_id:016x}" for link in batch.links} == enqueued
    # AND each message still gets a worker span in its own trace
    assert sorted(trace_hex(span) for span in by_name(finished, "worker.message")) == sorted(traces)
