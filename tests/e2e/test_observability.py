"""Observability through the local runner: /metrics moving as mail is sent, health and info."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import (
    DELIVERY_TIMEOUT_SECONDS,
    SAMPLE_PROPS,
    Runner,
    http,
    kill,
    start_runner,
)
from tests.integration.provider_doubles import SwitchableSmtp
from tests.run_services import (
    POSTGRES_SERVER,
    drop_database,
    drop_database_at_exit,
    own_redis_server,
    run_database_name,
)

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


@pytest.fixture(scope="module")
def relay() -> Iterator[SwitchableSmtp]:
    """A real SMTP relay the test can refuse mail with (550) or take down (421)."""
    server = SwitchableSmtp().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def failing_runner(
    tmp_path_factory: pytest.TempPathFactory, relay: SwitchableSmtp
) -> Iterator[Runner]:
    """A runner of its own sending through ``relay``: its breaker trips, not the shared one's."""
    folder = tmp_path_factory.mktemp("failing-runner")
    database_url = f"{POSTGRES_SERVER}/{run_database_name('e2e_relay')}"
    drop_database(database_url)
    drop_database_at_exit(database_url)
    started = start_runner(
        folder / "local",
        database_url,
        folder / "runner.log",
        # Database 2 of the run's own Redis: breakers and buckets apart from the shared runner's.
        redis_url=f"{own_redis_server()}/2",
        environment_overrides={
            "MAILROOM_SMTP_RELAY": f"{relay.host}:{relay.port}",
            "PROVIDER_ORDER": "smtp",
            # One try, so a transient failure ends the message (and counts) at
            # once; two of them open the breaker, which then stays open.
            "MAX_SEND_ATTEMPTS": "1",
            "BREAKER_FAILURE_THRESHOLD": "2",
            "BREAKER_COOLDOWN_SECONDS": "600",
        },
    )
    try:
        yield started
    finally:
        try:
            started.stop()
        finally:
            kill(started)


def test_failures_and_breaker_changes_counted_through_the_runner(
    failing_runner: Runner, relay: SwitchableSmtp
) -> None:
    runner = failing_runner

    def send(to: str) -> None:
        answer = http(
            "POST",
            f"{runner.api_url}/v1/send",
            headers=runner.auth_headers(),
            body={"template": "welcome", "to": to, "props": SAMPLE_PROPS},
        )
        assert answer.status == 202, answer.body

    def counted(name: str, expected: float, **labels: str) -> Callable[[], Samples | None]:
        def check() -> Samples | None:
            now = scrape(runner)
            return now if value(now, name, **labels) >= expected else None

        return check

    # GIVEN two good messages and one to an address the relay refuses (550), sent
    for to in ("ada@example.com", "bob@example.com", "reject-carol@example.com"):
        send(to)
    runner.wait_for(
        "the 550 counted",
        counted("mailroom_emails_failed_total", 1, error_type="permanent"),
        DELIVERY_TIMEOUT_SECONDS,
    )
    runner.wait_for(
        "two sends counted",
        counted("mailroom_emails_sent_total", 2, provider="smtp"),
        DELIVERY_TIMEOUT_SECONDS,
    )
    # WHEN the relay goes down (421 at MAIL) and two more come
    relay.mode = "down"
    send("dan@example.com")
    send("eve@example.com")
    found = runner.wait_for(
        "two transient failures counted",
        counted("mailroom_emails_failed_total", 2, error_type="transient"),
        DELIVERY_TIMEOUT_SECONDS,
    )

    # THEN the runner's /metrics says exactly what happened
    assert value(found, "mailroom_emails_queued_total") == 5
    assert value(found, "mailroom_emails_sent_total", provider="smtp") == 2
    assert value(found, "mailroom_send_latency_seconds_count", provider="smtp") == 2
    assert value(found, "mailroom_emails_failed_total", error_type="permanent") == 1
    assert value(found, "mailroom_emails_failed_total", error_type="transient") == 2
    errors = "mailroom_provider_errors_total"
    assert value(found, errors, provider="smtp", kind="permanent") == 1
    assert value(found, errors, provider="smtp", kind="transient") == 2
    # AND the breaker opened once, on the second transient failure, and reads open
    transitions = "mailroom_breaker_transitions_total"
    assert value(found, transitions, provider="smtp", state="open") == 1
    assert value(found, "mailroom_breaker_state", provider="smtp") == 2
    # AND the relay saw a MAIL command for each of the five, and nothing more
    assert relay.mail_commands == 5
    assert (
        value(found, "mailroom_api_requests_total", route="/v1/send", method="POST", status="2xx")
        == 5
    )
    # AND no label carries an address or an id
    assert not [key for key in found if any("@" in v or len(v) > 40 for _, v in key[1])]
