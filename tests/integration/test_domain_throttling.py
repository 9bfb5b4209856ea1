"""Per-recipient-domain throttling (issue 20, item 5) on a real Redis with an injected clock,
and AIMD against an aiosmtpd relay that answers 421 4.7.28 to RCPT for gmail.com."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailroom.adapters.db.unit_of_work import Database
from mailroom.adapters.domain_throttle import RedisDomainThrottle
from mailroom.adapters.redis_store import RedisStore
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.model import EventType
from mailroom.domain.throttling import DomainGroup, ThrottlePolicy
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.services import delivery
from tests.events import FakeLambdaContext, request_event
from tests.fakes import RecordingQueue
from tests.integration.conftest import SinkHandler, free_port

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-for-domain-throttling"
PROPS = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())
START = 1_800_000_000.0  # a fixed moment, 08:00 UTC


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def throttle(redis_url: str, clock: Clock, **policy: Any) -> RedisDomainThrottle:
    return RedisDomainThrottle(RedisStore(redis_url), ThrottlePolicy(**policy), clock=clock)


def test_a_groups_ceiling_holds_over_a_minute(redis_url: str, clock: Clock) -> None:
    # GIVEN gmail limited to 6 a minute for one sender
    limiter = throttle(redis_url, clock, per_minute={DomainGroup.GMAIL: 6})

    def take() -> Any:
        return limiter.take(
            "domain:a.example", DomainGroup.GMAIL, ceiling=6, from_domain="a.example"
        )

    # WHEN messages are offered one a second for two minutes
    allowed_at: list[float] = []
    for second in range(120):
        clock.now = START + second
        decision = take()
        if decision.allowed:
            allowed_at.append(clock.now)
        else:
            # THEN a refusal says how long until a token is back (10 s a token)
            assert 1 <= decision.retry_after_seconds <= 10
    # THEN no 60-second window saw more than 6 and the burst of one (spread: one per 10 s)
    for start in allowed_at:
        assert sum(1 for t in allowed_at if start <= t < start + 60) <= 7
    assert 11 <= len(allowed_at) <= 13
    assert allowed_at[:3] == [START, START + 10, START + 20]
    # AND another sender, and another group of the same sender, are not held by it
    assert limiter.take(
        "domain:b.example", DomainGroup.GMAIL, ceiling=6, from_domain="b.example"
    ).allowed
    assert limiter.take(
        "domain:a.example", DomainGroup.YAHOO, ceiling=6, from_domain="a.example"
    ).allowed


def test_a_deferral_halves_the_rate_once_per_window_and_it_climbs_back(
    redis_url: str, clock: Clock
) -> None:
    limiter = throttle(redis_url, clock, increase_step=10, decrease_factor=0.5)
    limiter._hold = 60
    sender, group = "smtp-config:x", DomainGroup.GMAIL
    # GIVEN a sender at its ceiling of 100 a minute
    assert limiter.take(sender, group, ceiling=100, from_domain="a.example").allowed
    assert limiter.current_rate(sender, group) == 100
    # WHEN told to slow down twice within a minute
    assert limiter.slow_down(sender, group, ceiling=100) == 50
    clock.now += 5
    # THEN it halved once (a burst of deferrals is one signal), and climbs 10 a minute
    assert limiter.slow_down(sender, group, ceiling=100) == pytest.approx(50 + 10 * 5 / 60, 0.01)
    # WHEN told again after the window
    clock.now += 60
    # THEN it halves again (having climbed back ~11 meanwhile)
    assert limiter.slow_down(sender, group, ceiling=100) == pytest.approx((50 + 65 / 6) / 2, 0.01)
    # WHEN three quiet minutes pass
    before = limiter.current_rate(sender, group)
    assert before is not None
    clock.now += 180
    limiter.take(sender, group, ceiling=100, from_domain="a.example")
    # THEN it climbed back by the step each minute, not past the ceiling
    assert limiter.current_rate(sender, group) == pytest.approx(before + 30, 0.01)
    clock.now += 3600
    limiter.take(sender, group, ceiling=100, from_domain="a.example")
    assert limiter.current_rate(sender, group) == 100


def test_warm_up_caps_each_groups_daily_volume_and_doubles(redis_url: str, clock: Clock) -> None:
    # GIVEN warm-up from 2 a day to 100, and no per-minute ceiling
    limiter = throttle(redis_url, clock, warmup_start_per_day=2, warmup_target_per_day=100)

    def day(group: DomainGroup) -> int:
        sent = 0
        for _ in range(20):
            decision = limiter.take(
                "domain:new.example", group, ceiling=None, from_domain="new.example"
            )
            if not decision.allowed:
                # THEN what is over the cap waits (at most an hour, then checks again)
                assert decision.reason == "warm-up daily cap"
                assert 1 <= decision.retry_after_seconds <= 3600
                break
            sent += 1
        return sent

    # WHEN a new domain sends on its first, second and third day
    first = (day(DomainGroup.GMAIL), day(DomainGroup.OUTLOOK))
    clock.now += 86_400
    second = day(DomainGroup.GMAIL)
    clock.now += 86_400
    third = day(DomainGroup.GMAIL)
    # THEN each group got 2 the first day, then 4, then 8
    assert first == (2, 2)
    assert (second, third) == (4, 8)


# --- AIMD through the worker, against a relay that says 421 -----------------


@dataclass
class RateLimitingHandler(SinkHandler):
    """The conftest sink, answering 421 4.7.28 to gmail.com recipients while ``slow``."""

    slow: bool = False

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.slow and address.endswith("@gmail.com"):
            return "421 4.7.28 Our system has detected an unusual rate of unsolicited mail"
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.fixture
def rate_limiting_relay() -> Iterator[tuple[RateLimitingHandler, int]]:
    handler = RateLimitingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


class Stack:
    def __init__(self, database_url: str, redis_url: str, port: int, clock: Clock) -> None:
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            smtp_host="127.0.0.1",
            smtp_port=port,
            throttle_per_minute="gmail=4",
            # Slow enough not to blur the numbers below; the climb is checked at the end.
            throttle_increase_per_minute=0.001,
        )
        self.throttle = RedisDomainThrottle(
            RedisStore(redis_url), self.settings.throttle_policy, clock=clock
        )
        self.services: Services = bootstrap(
            self.settings, queue=RecordingQueue(), domain_throttle=self.throttle
        )
        provider = lambda: self.services  # noqa: E731 - the routes take a provider
        self.api = create_api(
            [send_routes(provider)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
            client_gate=ClientGate(provider),
        )
        self.admin_api = create_api(
            admin_routes(provider), max_request_bytes=lambda: self.settings.max_request_bytes
        )
        event = request_event(
            "POST",
            "/admin/clients",
            body={"name": "throttled"},
            Authorization=f"Bearer {ADMIN_TOKEN}",
        )
        body = json.loads(self.admin_api.resolve(event, FakeLambdaContext())["body"])
        self.client = {"key": body["api_key"], "secret": body["api_secret"]}

    def send(self, to: str) -> uuid.UUID:
        body = {"template": "welcome", "from": "news@sender.example", "to": [to], "props": PROPS}
        event = request_event(
            "POST",
            "/v1/send",
            body=body,
            X_Api_Key=self.client["key"],
            X_Api_Secret=self.client["secret"],
        )
        answer = self.api.resolve(event, FakeLambdaContext())
        assert answer["statusCode"] == 202, answer
        return uuid.UUID(json.loads(answer["body"])["id"])

    def deliver(self, message_id: uuid.UUID) -> delivery.DeliveryOutcome:
        return delivery.deliver_message(
            self.services.uow(),
            self.services.templates,
            self.services.renderer,
            self.services.providers,
            message_id=message_id,
            max_attempts=5,
        )


def test_a_421_from_gmail_halves_its_rate_and_later_mail_is_delayed_not_failed(
    database: Database,
    database_url: str,
    redis_url: str,
    clock: Clock,
    rate_limiting_relay: tuple[RateLimitingHandler, int],
) -> None:
    handler, port = rate_limiting_relay
    stack = Stack(database_url, redis_url, port, clock)
    sender = "domain:sender.example"
    # GIVEN gmail.com answers 421 4.7.28 to our RCPT
    handler.slow = True
    first = stack.send("ada@gmail.com")
    # WHEN the worker sends to it
    outcome = stack.deliver(first)
    # THEN the message is retried later (an attempt: it was tried), and gmail's rate halved
    assert outcome.result is delivery.DeliveryResult.RETRY
    assert stack.throttle.current_rate(sender, DomainGroup.GMAIL) == 2
    # WHEN gmail accepts again and another is sent at once
    handler.slow = False
    second = stack.send("bob@gmail.com")
    outcome = stack.deliver(second)
    # THEN it is put back for its bucket's delay (a token each 30 s at 2 a minute)
    assert outcome.result is delivery.DeliveryResult.RETRY
    assert outcome.retry_after_seconds == 30
    assert (outcome.error or "").startswith("throttled: gmail")
    # AND it was not failed, nor counted as an attempt
    with stack.services.uow() as uow:
        held = uow.messages.get(second)
        events = [event.type for event in uow.messages.events(second)]
    assert held is not None
    assert held.status.value == "queued"
    assert held.attempts == 0
    assert EventType.THROTTLED in events
    assert EventType.ATTEMPT_FAILED not in events
    # AND mail to other domains is not held by gmail's rate
    assert stack.deliver(stack.send("carol@example.org")).result is delivery.DeliveryResult.SENT
    # WHEN its delay has passed
    clock.now += 30
    # THEN it is sent, and the next one waits again
    assert stack.deliver(second).result is delivery.DeliveryResult.SENT
    assert stack.deliver(stack.send("dan@gmail.com")).result is delivery.DeliveryResult.RETRY
    # WHEN long quiet passes, the rate climbs back to the ceiling, no further
    clock.now += 3000 * 60
    assert stack.deliver(stack.send("erin@gmail.com")).result is delivery.DeliveryResult.SENT
    assert stack.throttle.current_rate(sender, DomainGroup.GMAIL) == 4
    assert len(handler.received) == 3


def test_one_batch_is_throttled_message_by_message_in_one_round_trip(
    database: Database,
    database_url: str,
    redis_url: str,
    clock: Clock,
    rate_limiting_relay: tuple[RateLimitingHandler, int],
) -> None:
    handler, port = rate_limiting_relay
    stack = Stack(database_url, redis_url, port, clock)
    # GIVEN a batch of three to gmail.com (4 a minute: a burst of one) and one elsewhere
    ids = [stack.send(f"u{i}@gmail.com") for i in range(3)] + [stack.send("x@example.org")]
    # WHEN the worker takes the batch
    outcomes = delivery.deliver_batch(
        stack.services.uow(),
        stack.services.templates,
        stack.services.renderer,
        stack.services.providers,
        items=[delivery.SendItem(message_id) for message_id in ids],
        max_attempts=5,
    )
    # THEN one gmail message and the other domain's go, the rest wait their turn
    # (which of the three gets the token is the claim's order)
    assert sorted(o.result.value for o in outcomes[:3]) == ["retry", "retry", "sent"]
    assert outcomes[3].result.value == "sent"
    assert sorted(o.retry_after_seconds or 0 for o in outcomes[:3]) == [0, 15, 15]
    assert len(handler.received) == 2
