"""The metrics facade's two backends: EMF lines and the Prometheus exposition."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from prometheus_client.parser import text_string_to_metric_families

from mailroom.adapters.metrics.base import Metrics, error_type_of
from mailroom.adapters.metrics.emf import EmfMetrics
from mailroom.adapters.metrics.prometheus import PrometheusMetrics

# The required fields of the CloudWatch Embedded Metric Format specification
# (CloudWatch_Embedded_Metric_Format_Specification.html, "The root node",
# "MetricDirective", "MetricDefinition"), as a JSON Schema.
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1, "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1},
                                        "Unit": {
                                            "enum": [
                                                "Seconds",
                                                "Microseconds",
                                                "Milliseconds",
                                                "Bytes",
                                                "Count",
                                                "None",
                                            ]
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def emf_lines(record: Any) -> list[dict[str, Any]]:
    lines: list[str] = []
    metrics = EmfMetrics("Mailroom", write=lines.append, clock=lambda: 1_700_000_000.5)
    record(metrics)
    metrics.flush()
    return [json.loads(line) for line in lines]


def assert_valid_emf(document: dict[str, Any]) -> None:
    jsonschema.validate(document, EMF_SCHEMA)
    # Every dimension named and every metric defined is a member of the root node,
    # a metric's value a number or an array of at most 100 numbers.
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                assert isinstance(document[name], str), name
        for definition in directive["Metrics"]:
            value = document[definition["Name"]]
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100
            assert all(isinstance(v, int | float) for v in values)


def test_every_emf_line_holds_the_specifications_required_fields() -> None:
    # GIVEN an invocation that counted one of everything
    def record(metrics: Metrics) -> None:
        metrics.email_queued()
        metrics.email_sent("smtp", 0.25)
        metrics.email_sent("smtp", 0.5)
        metrics.email_failed("render_error")
        metrics.provider_error("ses", "transient")
        metrics.breaker_changed("ses", "open")
        metrics.rate_limited("rate_limited")
        metrics.webhook_delivery("sendgrid", "accepted")
        metrics.event_ingested("bounced", 2)
        metrics.queue_depth("send", 3, 12.5)

    # WHEN it is flushed
    documents = emf_lines(record)

    # THEN each line is a valid EMF document
    assert documents
    for document in documents:
        assert_valid_emf(document)
    by_metric = {
        definition["Name"]: document
        for document in documents
        for directive in document["_aws"]["CloudWatchMetrics"]
        for definition in directive["Metrics"]
    }
    # AND the counts are summed, the latencies kept as samples, the labels dimensions
    sent = by_metric["emails_sent"]
    assert (sent["provider"], sent["emails_sent"], sent["send_latency_seconds"]) == (
        "smtp",
        2,
        [0.25, 0.5],
    )
    assert sent["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["provider"], []]
    assert by_metric["emails_queued"]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
    assert by_metric["events_ingested"]["events_ingested"] == 2
    assert by_metric["emails_sent"]["_aws"]["Timestamp"] == 1_700_000_000_500


def test_more_than_a_hundred_samples_split_across_documents() -> None:
    # GIVEN 250 sends in one invocation
    def record(metrics: Metrics) -> None:
        for _ in range(250):
            metrics.email_sent("smtp", 0.1)

    # WHEN flushed
    documents = emf_lines(record)

    # THEN no document carries more than 100 values of a metric, and none is lost
    for document in documents:
        assert_valid_emf(document)
    samples = [
        len(d["send_latency_seconds"]) if isinstance(d["send_latency_seconds"], list) else 1
        for d in documents
    ]
    assert sum(samples) == 250
    assert sum(d.get("emails_sent", 0) for d in documents) == 250


def test_nothing_is_written_when_nothing_was_counted() -> None:
    assert emf_lines(lambda metrics: None) == []


def test_the_client_label_appears_only_when_turned_on() -> None:
    # GIVEN the default backend and one with METRICS_CLIENT_LABEL
    plain, labelled = PrometheusMetrics(), PrometheusMetrics(client_label=True)
    # WHEN each counts a queued message
    for metrics in (plain, labelled):
        metrics.email_queued(client_id="c-1")
    # THEN only the second carries the client's id
    assert samples(plain)["mailroom_emails_queued_total"] == [({}, 1.0)]
    assert samples(labelled)["mailroom_emails_queued_total"] == [({"client": "c-1"}, 1.0)]


def samples(metrics: PrometheusMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    body = b"".join(metrics.wsgi_app()({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, _ignore))
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _ignore(status: str, headers: list[tuple[str, str]]) -> None:
    assert status.startswith("200")


def test_the_prometheus_exposition_parses_with_the_names_seed_c_asks_for() -> None:
    # GIVEN one of everything counted
    metrics = PrometheusMetrics()
    metrics.email_queued()
    metrics.email_sent("smtp", 0.2)
    metrics.email_failed("suppressed")
    metrics.provider_error("smtp", "transient")
    metrics.breaker_changed("smtp", "open")
    metrics.rate_limited("quota_exceeded")
    metrics.webhook_delivery("mailgun", "refused")
    metrics.event_ingested("complained")
    metrics.api_request("/v1/send", "POST", 202, 0.03)
    metrics.queue_depth("send", 4, 30.0)

    # WHEN scraped and parsed by prometheus-client's own parser
    found = samples(metrics)

    # THEN every name is there with its bounded labels
    assert found["mailroom_emails_queued_total"] == [({}, 1.0)]
    assert found["mailroom_emails_sent_total"] == [({"provider": "smtp"}, 1.0)]
    assert found["mailroom_emails_failed_total"] == [({"error_type": "suppressed"}, 1.0)]
    assert found["mailroom_provider_errors_total"] == [
        ({"provider": "smtp", "kind": "transient"}, 1.0)
    ]
    assert found["mailroom_breaker_transitions_total"] == [
        ({"provider": "smtp", "state": "open"}, 1.0)
    ]
    assert found["mailroom_breaker_state"] == [({"provider": "smtp"}, 2.0)]
    assert found["mailroom_rate_limit_hits_total"] == [({"code": "quota_exceeded"}, 1.0)]
    assert found["mailroom_webhook_deliveries_total"] == [
        ({"provider": "mailgun", "outcome": "refused"}, 1.0)
    ]
    assert found["mailroom_events_ingested_total"] == [({"type": "complained"}, 1.0)]
    assert ({"provider": "smtp"}, 1.0) in found["mailroom_send_latency_seconds_count"]
    assert ({"route": "/v1/send", "method": "POST"}, 1.0) in found[
        "mailroom_api_request_duration_seconds_count"
    ]
    assert found["mailroom_api_requests_total"] == [
        ({"route": "/v1/send", "method": "POST", "status": "2xx"}, 1.0)
    ]
    assert found["mailroom_queue_depth"] == [({"queue": "send"}, 4.0)]
    assert found["mailroom_queue_oldest_age_seconds"] == [({"queue": "send"}, 30.0)]


def test_error_types_are_the_codes_of_failure_reasons_and_nothing_unbounded() -> None:
    assert error_type_of("render_error: missing prop 'name'") == "render_error"
    assert error_type_of("suppressed") == "suppressed"
    assert error_type_of("permanent: 550 5.1.1 <ada@example.com> unknown") == "permanent"
    # An address or free text never becomes a label value
    assert error_type_of("ada@example.com: refused") == "other"
    assert error_type_of(None) == "other"


def test_a_reputation_change_is_counted_by_state_in_both_backends() -> None:
    # GIVEN a client paused and another warned (issue 21)
    def record(metrics: Metrics) -> None:
        metrics.reputation_changed("pause")
        metrics.reputation_changed("warn")

    # WHEN Prometheus scrapes and EMF flushes
    prometheus = PrometheusMetrics()
    record(prometheus)
    lines = emf_lines(record)

    # THEN each names its state: the SendingPaused alarm and rule select state=pause
    found = samples(prometheus)["mailroom_reputation_changes_total"]
    assert sorted((labels["state"], value) for labels, value in found) == [
        ("pause", 1.0),
        ("warn", 1.0),
    ]
    for line in lines:
        assert_valid_emf(line)
    assert sorted(line["state"] for line in lines if "reputation_changes" in line) == [
        "pause",
        "warn",
    ]
