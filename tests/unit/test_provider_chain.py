"""The provider chain and its breakers, on in-memory breaker state and a manual clock."""

from __future__ import annotations

import uuid

import pytest

from mailroom.adapters.operator_signals import SignalKey
from mailroom.adapters.providers.base import (
    EmailProvider,
    FailureKind,
    ProviderError,
    ProviderReceipt,
)
from mailroom.domain.mime import OutgoingEmail
from mailroom.domain.retry import SQS_MAX_VISIBILITY_SECONDS, Backoff
from mailroom.services.provider_chain import ProviderChain
from tests.provider_fakes import ManualClock, RecordingSignals, memory_breakers

EMAIL = OutgoingEmail(
    message_id=f"<{uuid.uuid4()}@example.com>",
    envelope_from="noreply@example.com",
    envelope_recipients=["ada@example.com"],
    mime=b"Subject: hi\r\n\r\nhi\r\n",
)


class Switchable(EmailProvider):
    """A provider whose answer the test sets, counting every send it is asked for."""

    def __init__(self, name: str, failure: FailureKind | None = None) -> None:
        self.name = name
        self.failure = failure
        self.calls = 0
        self.raise_bug = False

    def send(self, email: OutgoingEmail) -> ProviderReceipt:
        self.calls += 1
        if self.raise_bug:
            raise KeyError("a bug in the adapter")
        if self.failure is not None:
            raise ProviderError(self.name, self.failure, f"{self.failure.value} trouble")
        return ProviderReceipt(self.name, f"{self.name}-{self.calls}")


class Rig:
    def __init__(self, *providers: Switchable, cooldown: float = 30.0) -> None:
        self.clock = ManualClock()
        self.signals = RecordingSignals()
        self.breakers = memory_breakers(self.signals, self.clock, cooldown_seconds=cooldown)
        self.chain = ProviderChain(
            {p.name: p for p in providers}, [p.name for p in providers], self.breakers, self.signals
        )

    def send(self, client_order: list[str] | None = None) -> str | None:
        result = self.chain.send(EMAIL, client_order=client_order)
        return result.receipt.provider if result.receipt else None


def test_a_transient_failure_fails_over_to_the_next_provider_at_once() -> None:
    # GIVEN a primary that is down and a healthy secondary
    primary, secondary = Switchable("smtp", FailureKind.TRANSIENT), Switchable("ses")
    rig = Rig(primary, secondary)
    # WHEN one message is sent
    result = rig.chain.send(EMAIL)
    # THEN the secondary carried it, and the primary's failure is on record
    assert result.receipt == ProviderReceipt("ses", "ses-1")
    assert [(f.provider, f.kind) for f in result.failures] == [("smtp", FailureKind.TRANSIENT)]
    assert rig.breakers.state("smtp") == "closed"  # one failure is below the threshold


def test_the_breaker_opens_at_the_threshold_and_later_sends_skip_the_primary() -> None:
    primary, secondary = Switchable("smtp", FailureKind.TRANSIENT), Switchable("ses")
    rig = Rig(primary, secondary)
    # WHEN five messages fail on the primary (the threshold)
    assert [rig.send() for _ in range(5)] == ["ses"] * 5
    # THEN its breaker is open, once, as a counted state change
    assert rig.breakers.state("smtp") == "open"
    assert rig.signals.breaker_states("smtp") == ["open"]
    # AND the next sends do not even ask the primary
    result = rig.chain.send(EMAIL)
    assert (result.receipt is not None, result.skipped, primary.calls) == (True, ("smtp",), 5)


def test_after_the_cooldown_the_primary_gets_trial_sends_and_takes_traffic_back() -> None:
    primary, secondary = Switchable("smtp", FailureKind.TRANSIENT), Switchable("ses")
    rig = Rig(primary, secondary)
    for _ in range(5):
        rig.send()
    # WHEN the primary recovers but the cooldown has not passed
    primary.failure = None
    rig.clock.advance(29.9)
    assert rig.send() == "ses"
    # AND then it has
    rig.clock.advance(0.2)
    sent_by = [rig.send() for _ in range(4)]
    # THEN the breaker went half-open, closed after 3 successes, and the primary sends again
    assert sent_by == ["smtp"] * 4
    assert rig.signals.breaker_states("smtp") == ["open", "half-open", "closed"]
    assert rig.breakers.state("smtp") == "closed"


def test_a_failed_trial_send_opens_the_breaker_again() -> None:
    primary, secondary = Switchable("smtp", FailureKind.TRANSIENT), Switchable("ses")
    rig = Rig(primary, secondary)
    for _ in range(5):
        rig.send()
    rig.clock.advance(30)
    # WHEN the trial send fails too
    assert rig.send() == "ses"
    # THEN it is open for another cooldown
    assert rig.breakers.state("smtp") == "open"
    calls = primary.calls
    rig.clock.advance(10)
    rig.send()
    assert primary.calls == calls


def test_a_permanent_error_fails_the_message_without_touching_the_breaker() -> None:
    primary, secondary = Switchable("smtp", FailureKind.TRANSIENT), Switchable("ses")
    rig = Rig(primary, secondary)
    for _ in range(4):  # one below the threshold
        rig.send()
    # WHEN the primary refuses a message permanently
    primary.failure = FailureKind.PERMANENT
    result = rig.chain.send(EMAIL)
    # THEN that message stops there (the secondary is not asked)
    assert result.receipt is None
    assert result.permanent_failure is not None
    assert secondary.calls == 4
    # AND the breaker's count was neither raised nor reset: one more
    # transient failure is exactly the fifth, and opens it
    assert rig.breakers.state("smtp") == "closed"
    primary.failure = FailureKind.TRANSIENT
    rig.send()
    assert rig.breakers.state("smtp") == "open"


def test_a_config_error_raises_an_alarm_and_fails_over_without_opening_the_breaker() -> None:
    primary, secondary = Switchable("sendgrid", FailureKind.CONFIG), Switchable("mailgun")
    rig = Rig(primary, secondary)
    # WHEN bad credentials are refused for ten messages
    result = rig.chain.send(EMAIL)
    for _ in range(9):
        rig.send()
    # THEN each went out through the next provider
    assert result.receipt == ProviderReceipt("mailgun", "mailgun-1")
    # AND each refusal is an alarm with its stable key, naming the provider
    alarms = rig.signals.keyed(SignalKey.PROVIDER_CONFIG_ERROR)
    assert len(alarms) == 10
    assert {(a.level, a.dimensions["provider"]) for a in alarms} == {("alarm", "sendgrid")}
    # AND the breaker never opened: a refused sender is not a provider outage
    assert rig.breakers.state("sendgrid") == "closed"
    assert primary.calls == 10


def test_every_breaker_open_sends_nothing_and_says_so() -> None:
    primary, secondary = (
        Switchable("smtp", FailureKind.TRANSIENT),
        Switchable("ses", FailureKind.TRANSIENT),
    )
    rig = Rig(primary, secondary)
    for _ in range(5):
        rig.send()
    result = rig.chain.send(EMAIL)
    assert (result.receipt, result.failures, result.skipped) == (None, (), ("smtp", "ses"))
    assert "circuit breaker is open" in result.summary
    assert result.summary.startswith("transient:")


def test_an_adapter_bug_fails_over_but_never_counts_against_the_breaker() -> None:
    # GIVEN a primary whose adapter raises something it did not classify
    primary, secondary = Switchable("smtp"), Switchable("ses")
    primary.raise_bug = True
    rig = Rig(primary, secondary)
    # WHEN ten messages are sent (twice the breaker's threshold)
    result = rig.chain.send(EMAIL)
    for _ in range(9):
        rig.send()
    # THEN each failed over to the secondary
    assert result.receipt is not None
    assert result.receipt.provider == "ses"
    assert "unexpected error" in result.failures[0].message
    assert result.failures[0].kind is FailureKind.DEFERRED
    # AND the breaker shared by every client never moved: what escapes an
    # adapter may be one message's content, not the provider's health
    assert rig.breakers.state("smtp") == "closed"
    assert primary.calls == 10
    # AND with nowhere to fail over to, the message is tried again later
    alone = Rig(primary)
    result = alone.chain.send(EMAIL)
    assert result.receipt is None
    assert result.permanent_failure is None
    assert result.summary.startswith("deferred: smtp: unexpected error")


def test_a_deferred_refusal_ends_the_pass_without_touching_the_breaker() -> None:
    # GIVEN a primary that defers every message (greylisting at RCPT)
    primary, secondary = Switchable("smtp", FailureKind.DEFERRED), Switchable("ses")
    rig = Rig(primary, secondary)
    # WHEN ten messages are sent
    results = [rig.chain.send(EMAIL) for _ in range(10)]
    # THEN none went elsewhere (the same relay is asked again later) and none
    # failed for good
    assert secondary.calls == 0
    assert all(r.receipt is None and r.permanent_failure is None for r in results)
    assert results[0].summary.startswith("deferred:")
    # AND the breaker stayed closed
    assert rig.breakers.state("smtp") == "closed"
    assert rig.signals.breaker_states("smtp") == []


@pytest.mark.parametrize(
    ("client_order", "expected"),
    [
        (None, ("smtp", "ses", "mailgun")),
        ([], ("smtp", "ses", "mailgun")),
        (["mailgun", "smtp"], ("mailgun", "smtp")),
        (["sendgrid", "ses", "ses"], ("ses",)),  # not configured, and a repeat: dropped
        (["sendgrid"], ("smtp", "ses", "mailgun")),  # nothing usable: the global order
    ],
)
def test_a_client_order_reorders_or_narrows_the_configured_providers(
    client_order: list[str] | None, expected: tuple[str, ...]
) -> None:
    rig = Rig(Switchable("smtp"), Switchable("ses"), Switchable("mailgun"))
    assert rig.chain.order_for(client_order) == expected


def test_a_client_order_decides_who_sends_first() -> None:
    rig = Rig(Switchable("smtp"), Switchable("ses"))
    assert rig.send(client_order=["ses", "smtp"]) == "ses"
    assert rig.send() == "smtp"


def test_the_chain_refuses_an_order_naming_unknown_providers() -> None:
    signals = RecordingSignals()
    with pytest.raises(ValueError, match="unknown providers"):
        ProviderChain(
            {"smtp": Switchable("smtp")}, ["smtp", "ses"], memory_breakers(signals), signals
        )


class TestBackoff:
    def test_doubles_from_the_base_up_to_the_cap(self) -> None:
        backoff = Backoff(base_seconds=60, cap_seconds=300)
        assert [backoff.delay_seconds(n) for n in range(1, 7)] == [60, 120, 240, 300, 300, 300]
        assert backoff.schedule(5) == [60, 120, 240, 300]

    def test_jitter_only_shortens_and_by_at_most_its_share(self) -> None:
        backoff = Backoff(base_seconds=100, cap_seconds=10_000, jitter=0.2)
        assert backoff.delay_seconds(1, draw=0.0) == 100
        assert backoff.delay_seconds(1, draw=0.5) == 90
        assert backoff.delay_seconds(1, draw=0.999999) == 80

    def test_never_beyond_what_sqs_accepts(self) -> None:
        backoff = Backoff(base_seconds=40_000, cap_seconds=10**9)
        assert backoff.delay_seconds(200) == SQS_MAX_VISIBILITY_SECONDS

    def test_refuses_a_jitter_that_could_reach_zero(self) -> None:
        with pytest.raises(ValueError, match="jitter"):
            Backoff(jitter=1.0)


def test_a_provider_that_just_sent_is_not_looked_up_again_for_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a message sent through a closed breaker
    rig = Rig(Switchable("smtp"))
    lookups: list[str] = []
    allows = rig.breakers.allows

    def counted(name: str) -> bool:
        lookups.append(name)
        return allows(name)

    monkeypatch.setattr(rig.breakers, "allows", counted)
    assert rig.send() == "smtp"
    # WHEN the next one (in this batch or the next) follows at once
    assert rig.send() == "smtp"
    # THEN the breaker state was read once, not once per message (issue 8)
    assert lookups == ["smtp"]
