"""Observability through the local runner: /metrics moving as mail is sent, health and info."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import DELIVERY_TIMEOUT_SECONDS, SAMPLE_PROPS, Runner, http

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(runner: Runner) -> Samples:
    """``curl /metrics``, parsed by prometheus-client's own text parser."""
    with urllib.request.urlopen(f"{runner.api_url}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_the_counters_move_as_mail_is_sent(runner: Runner) -> None:
    # GIVEN the runner's metrics as they are
    before = scrape(runner)

    # WHEN two messages are sent and the worker delivers them
    for to in ("metrics-1@example.com", "metrics-2@example.com"):
        answer = http(
            "POST",
            f"{runner.api_url}/v1/send",
            headers=runner.auth_headers(),
            body={"template": "welcome", "to": to, "props": SAMPLE_PROPS},
        )
        assert answer.status == 202, answer.body

    def delivered() -> Samples | None:
        now = scrape(runner)
        sent = value(now, "mailroom_emails_sent_total", provider="smtp")
        return (
            now
            if sent - value(before, "mailroom_emails_sent_total", provider="smtp") >= 2
            else None
        )

    after = runner.wait_for("two sends counted", delivered, DELIVERY_TIMEOUT_SECONDS)

    # THEN queued and sent moved by exactly two, and nothing failed
    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mailroom_emails_queued_total") == 2
    assert moved("mailroom_emails_sent_total", provider="smtp") == 2
    assert moved("mailroom_send_latency_seconds_count", provider="smtp") == 2
    assert not [
        key
        for key in after
        if key[0] == "mailroom_emails_failed_total" and after[key] != before.get(key, 0)
    ]
    # AND the API's latency histogram counted both requests
    assert (
        moved("mailroom_api_request_duration_seconds_count", route="/v1/send", method="POST") == 2
    )
    # AND the queue gauges are there
    assert ("mailroom_queue_depth", frozenset({("queue", "send")})) in after


def test_health_detailed_ready_live_and_info(runner: Runner) -> None:
    # GIVEN the runner with everything up
    token = runner.credentials["admin_token"]
    # WHEN an operator asks for the detailed health
    answer = http(
        "GET", f"{runner.api_url}/health/detailed", headers={"Authorization": f"Bearer {token}"}
    )
    # THEN PostgreSQL, Redis, the queues and the SMTP sink all answer
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["dependencies"]["postgres"]["ok"] is True
    assert body["dependencies"]["redis"]["ok"] is True
    assert body["providers"]["smtp"]["reachable"]["ok"] is True
    assert body["queues"]["dead-letter"]["depth"] is not None
    assert body["migrations"]["at_head"] is True
    # AND without the token it is refused
    assert http("GET", f"{runner.api_url}/health/detailed").status == 401
    # AND readiness and liveness answer apart
    assert http("GET", f"{runner.api_url}/ready").json()["ready"] is True
    assert http("GET", f"{runner.api_url}/live").json() == {"status": "ok"}
    # AND a client learns the API's version and build
    info = http("GET", f"{runner.api_url}/v1/info", headers=runner.auth_headers())
    assert info.status == 200
    assert info.json() == {"api": "0.1.0", "build": "dev"}
    assert http("GET", f"{runner.api_url}/v1/info").status == 401
