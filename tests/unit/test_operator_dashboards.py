"""The Grafana dashboard and Prometheus alert rules under docs/ use metrics Mailroom serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from mailroom.adapters.metrics.prometheus import PrometheusMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability"
_METRIC = re.compile(r"\bmailroom_[a-z_]+\b")


def served_names() -> set[str]:
    """Every sample name a scrape can show (counters' _total, histograms' _bucket...)."""
    metrics = PrometheusMetrics()
    # One of each, so every family has samples to name.
    metrics.email_queued()
    metrics.email_sent("smtp", 0.1)
    metrics.email_failed("permanent")
    metrics.provider_error("smtp", "transient")
    metrics.breaker_changed("smtp", "open")
    metrics.rate_limited("rate_limited")
    metrics.webhook_delivery("ses", "accepted")
    metrics.event_ingested("bounced")
    metrics.api_request("/v1/send", "POST", 202, 0.1)
    metrics.queue_depth("send", 1, 1.0)
    metrics.reputation_changed("paused")
    body = b"".join(
        metrics.wsgi_app()({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *_: None)
    )
    return {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_the_alert_rules_name_seed_cs_alerts_over_served_metrics() -> None:
    # GIVEN the rules file
    document: dict[str, Any] = yaml.safe_load((DOCS / "prometheus-alerts.yml").read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    # THEN seed C's four alerts are there
    names = {rule["alert"] for rule in rules}
    assert {"HighBounceRate", "QueueBacklog", "SMTPDown", "HighAPILatency"} <= names
    # AND every metric an expression reads is one /metrics serves
    served = served_names()
    for rule in rules:
        used = set(_METRIC.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= served, (rule["alert"], used - served)
        assert rule["annotations"]["summary"]


def test_the_dashboard_is_grafana_json_over_served_metrics() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert dashboard["title"] == "Mailroom"
    served = served_names()
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        used = set(_METRIC.findall(expr))
        assert used, expr
        assert used <= served, (expr, used - served)
    # AND the panels do not overlap
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dashboard["panels"]]
    assert len(cells) == len(set(cells))
