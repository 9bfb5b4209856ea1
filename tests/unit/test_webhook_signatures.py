"""Signature checks: what verifies, what is refused, and that nothing reaches emit when refused."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from mailroom.adapters.webhooks.base import WebhookRequest
from mailroom.adapters.webhooks.mailgun import MailgunWebhook
from mailroom.adapters.webhooks.sendgrid import SendGridWebhook
from mailroom.adapters.webhooks.ses import SesWebhook
from mailroom.adapters.webhooks.verify_mailgun import MailgunSignatureVerifier
from mailroom.adapters.webhooks.verify_sendgrid import (
    SendGridSignatureVerifier,
    load_verification_key,
)
from mailroom.adapters.webhooks.verify_sns import SnsVerifier, check_certificate_url
from mailroom.domain.errors import (
    DependencyUnavailable,
    InvalidSignature,
    MalformedWebhook,
    ReplayedWebhook,
    StaleWebhook,
    TopicNotAllowed,
    UntrustedCertificateUrl,
    WebhookNotConfigured,
)
from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType
from tests.fakes_feedback import FixedClock, MemoryReplayGuard, StaticFetcher
from tests.feedback_support import (
    CERT_URL,
    MAILGUN_SIGNING_KEY,
    NOW,
    TOPIC_ARN,
    expired_sns_signer,
    fixture,
    mailgun_signed,
    sendgrid_signer,
    ses_envelope,
    sns_lambda_event,
    sns_signer,
)

MAX_AGE = timedelta(minutes=5)


class Recorder:
    """Stands in for reconciliation: remembers what it was handed."""

    def __init__(self, *, fail: bool = False) -> None:
        self.batches: list[list[DeliveryEvent]] = []
        self.fail = fail

    def __call__(self, events: Sequence[DeliveryEvent]) -> int:
        if self.fail:
            raise DependencyUnavailable("database down")
        self.batches.append(list(events))
        return len(events)


def _ses(
    fetcher: StaticFetcher | None = None, *, topics: frozenset[str] = frozenset({TOPIC_ARN})
) -> tuple[SesWebhook, StaticFetcher]:
    fetcher = fetcher or StaticFetcher({CERT_URL: sns_signer().certificate_pem})
    verifier = SnsVerifier(fetcher, allowed_topics=topics, clock=FixedClock(NOW))
    return SesWebhook(verifier, fetcher), fetcher


def _sns_request(envelope: dict[str, Any], *, message_type: str | None = None) -> WebhookRequest:
    headers = {"Content-Type": "text/plain; charset=UTF-8"}
    headers["x-amz-sns-message-type"] = message_type or envelope["Type"]
    return WebhookRequest.of(json.dumps(envelope).encode(), headers)


class TestSns:
    @pytest.mark.parametrize("version", ["1", "2"])
    def test_both_signature_versions_verify(self, version: str) -> None:
        # GIVEN an SES bounce in an SNS envelope signed with SHA1 (v1) or SHA256 (v2)
        webhook, _ = _ses()
        envelope = ses_envelope(fixture("ses", "event-bounce-permanent.json"), version=version)
        emit = Recorder()
        # WHEN it is handled
        webhook.handle(_sns_request(envelope), emit)
        # THEN its events reach reconciliation
        (batch,) = emit.batches
        assert [e.event_type for e in batch] == [FeedbackEventType.BOUNCED]
        assert batch[0].event_id == envelope["MessageId"]

    def test_the_certificate_is_fetched_once_and_cached(self) -> None:
        webhook, fetcher = _ses()
        for name in ("event-delivery.json", "event-open.json", "event-click.json"):
            webhook.handle(_sns_request(ses_envelope(fixture("ses", name))), Recorder())
        assert fetcher.fetched == [CERT_URL]

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda e: e.update(Message=e["Message"].replace("Permanent", "Transient")),
            lambda e: e.update(MessageId="another-id"),
            lambda e: e.update(Timestamp="2030-01-01T00:00:00.000Z"),
            lambda e: e.update(Signature="AAAA" + e["Signature"][4:]),
            lambda e: e.update(Signature="not base64!"),
            lambda e: e.update(SignatureVersion="3"),
            lambda e: e.update(Subject="added after signing"),
        ],
    )
    def test_a_forged_or_altered_message_is_refused(self, tamper: Any) -> None:
        webhook, _ = _ses()
        envelope = ses_envelope(fixture("ses", "event-bounce-permanent.json"))
        tamper(envelope)
        emit = Recorder()
        with pytest.raises(InvalidSignature):
            webhook.handle(_sns_request(envelope), emit)
        assert emit.batches == []

    def test_a_message_signed_by_another_key_is_refused(self) -> None:
        # GIVEN a message signed with a key that is not the certificate's
        webhook, _ = _ses()
        envelope = expired_sns_signer().sign(
            {k: v for k, v in ses_envelope(fixture("ses", "event-delivery.json")).items()}
        )
        with pytest.raises(InvalidSignature):
            webhook.handle(_sns_request(envelope), Recorder())

    def test_a_topic_off_the_allowlist_is_refused_before_anything_is_fetched(self) -> None:
        webhook, fetcher = _ses(topics=frozenset({"arn:aws:sns:us-west-2:123456789012:Other"}))
        emit = Recorder()
        with pytest.raises(TopicNotAllowed):
            webhook.handle(_sns_request(ses_envelope(fixture("ses", "event-delivery.json"))), emit)
        assert fetcher.fetched == []
        assert emit.batches == []

    @pytest.mark.parametrize(
        "url",
        [
            "https://sns.us-west-2.amazonaws.com.evil.example/cert.pem",
            "https://evil.example/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
            "http://sns.us-west-2.amazonaws.com/SimpleNotificationService-x.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",  # other region
            "https://sns.us-west-2.amazonaws.com:8443/SimpleNotificationService-x.pem",
            "https://user@sns.us-west-2.amazonaws.com/SimpleNotificationService-x.pem",
            "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-x.pem?x=1",
            "https://sns.us-west-2.amazonaws.com/../../etc/passwd",
            "https://s3.amazonaws.com/sns.us-west-2.amazonaws.com/x.pem",
        ],
    )
    def test_a_certificate_url_off_sns_in_the_topics_region_is_refused(self, url: str) -> None:
        # GIVEN a correctly signed message whose SigningCertURL points elsewhere
        webhook, fetcher = _ses(StaticFetcher({url: sns_signer().certificate_pem}))
        envelope = ses_envelope(fixture("ses", "event-delivery.json"))
        envelope["SigningCertURL"] = url
        # THEN it is refused and that URL is never fetched
        with pytest.raises(UntrustedCertificateUrl):
            webhook.handle(_sns_request(envelope), Recorder())
        assert fetcher.fetched == []

    def test_the_documented_certificate_url_shape_is_accepted(self) -> None:
        check_certificate_url(CERT_URL, "us-west-2")

    def test_an_expired_certificate_is_refused(self) -> None:
        fetcher = StaticFetcher({CERT_URL: expired_sns_signer().certificate_pem})
        webhook, _ = _ses(fetcher)
        envelope = expired_sns_signer().sign(
            dict(ses_envelope(fixture("ses", "event-delivery.json")))
        )
        with pytest.raises(InvalidSignature, match="not valid now"):
            webhook.handle(_sns_request(envelope), Recorder())

    def test_an_unreachable_certificate_host_is_our_failure(self) -> None:
        webhook, _ = _ses(StaticFetcher(down=True))
        with pytest.raises(DependencyUnavailable):
            webhook.handle(
                _sns_request(ses_envelope(fixture("ses", "event-delivery.json"))), Recorder()
            )

    def test_a_header_that_contradicts_the_body_is_refused(self) -> None:
        webhook, _ = _ses()
        envelope = ses_envelope(fixture("ses", "event-delivery.json"))
        with pytest.raises(MalformedWebhook):
            webhook.handle(
                _sns_request(envelope, message_type="SubscriptionConfirmation"), Recorder()
            )

    def test_a_subscription_to_an_allowed_topic_is_confirmed_through_its_url(self) -> None:
        webhook, fetcher = _ses()
        envelope = sns_signer().sign(fixture("ses", "sns-subscription-confirmation.json"))
        emit = Recorder()
        webhook.handle(_sns_request(envelope), emit)
        assert fetcher.fetched == [CERT_URL, envelope["SubscribeURL"]]
        assert emit.batches == [[]]

    def test_a_subscription_to_another_topic_is_not_confirmed(self) -> None:
        webhook, fetcher = _ses(topics=frozenset({"arn:aws:sns:us-west-2:123456789012:Other"}))
        envelope = sns_signer().sign(fixture("ses", "sns-subscription-confirmation.json"))
        with pytest.raises(TopicNotAllowed):
            webhook.handle(_sns_request(envelope), Recorder())
        assert fetcher.fetched == []

    @pytest.mark.parametrize(
        "subscribe_url",
        [
            "https://evil.example/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}",
            "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&TopicArn={topic}&Token={token}",
            "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:Other&Token={token}",
            "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token=other",
        ],
    )
    def test_a_signed_subscribe_url_that_is_not_snss_own_link_is_not_visited(
        self, subscribe_url: str
    ) -> None:
        webhook, fetcher = _ses()
        envelope = fixture("ses", "sns-subscription-confirmation.json")
        envelope["SubscribeURL"] = subscribe_url.format(topic=TOPIC_ARN, token=envelope["Token"])
        with pytest.raises(UntrustedCertificateUrl):
            webhook.handle(_sns_request(sns_signer().sign(envelope)), Recorder())
        assert fetcher.fetched == [CERT_URL]

    def test_the_topic_validation_notification_is_accepted_without_events(self) -> None:
        webhook, _ = _ses()
        envelope = ses_envelope("Successfully validated SNS topic for Amazon SES event publishing.")
        emit = Recorder()
        webhook.handle(_sns_request(envelope), emit)
        assert emit.batches == [[]]

    def test_a_lambda_record_verifies_like_the_http_message(self) -> None:
        webhook, _ = _ses()
        event = sns_lambda_event(fixture("ses", "event-delivery.json"))
        verified = webhook.validate_lambda_record(event["Records"][0]["Sns"])
        (delivered,) = webhook.parse_events(verified)
        assert delivered.event_type is FeedbackEventType.DELIVERED

    def test_a_forged_lambda_record_is_refused(self) -> None:
        webhook, _ = _ses()
        event = sns_lambda_event(fixture("ses", "event-delivery.json"))
        event["Records"][0]["Sns"]["Message"] = json.dumps(fixture("ses", "event-complaint.json"))
        with pytest.raises(InvalidSignature):
            webhook.validate_lambda_record(event["Records"][0]["Sns"])


def _sendgrid(max_age: timedelta = MAX_AGE) -> SendGridWebhook:
    key = load_verification_key(sendgrid_signer().public_key)
    return SendGridWebhook(SendGridSignatureVerifier(key, clock=FixedClock(NOW), max_age=max_age))


class TestSendGrid:
    BODY = json.dumps(fixture("sendgrid", "batch.json")).encode()

    def test_a_signed_batch_verifies_and_yields_every_event(self) -> None:
        emit = Recorder()
        _sendgrid().handle(WebhookRequest.of(self.BODY, sendgrid_signer().headers(self.BODY)), emit)
        (batch,) = emit.batches
        assert len(batch) == 5

    def test_a_pem_public_key_works_too(self) -> None:
        from cryptography.hazmat.primitives import serialization

        pem = (
            sendgrid_signer()
            .key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        assert load_verification_key(pem).curve.name == "secp256r1"

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda body, headers: (body.replace(b"delivered", b"bounce"), headers),
            lambda body, headers: (
                body,
                {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": "1"},
            ),
            lambda body, headers: (
                body,
                {k: v for k, v in headers.items() if "Signature" not in k},
            ),
            lambda body, headers: (
                body,
                {**headers, "X-Twilio-Email-Event-Webhook-Signature": "bm90IGEgc2lnbmF0dXJl"},
            ),
        ],
    )
    def test_forged_requests_are_refused(self, tamper: Any) -> None:
        body, headers = tamper(self.BODY, sendgrid_signer().headers(self.BODY))
        emit = Recorder()
        with pytest.raises(InvalidSignature):
            _sendgrid().handle(WebhookRequest.of(body, headers), emit)
        assert emit.batches == []

    def test_a_stale_timestamp_is_refused_even_when_signed(self) -> None:
        headers = sendgrid_signer().headers(self.BODY, timestamp=NOW - timedelta(minutes=6))
        with pytest.raises(StaleWebhook):
            _sendgrid().handle(WebhookRequest.of(self.BODY, headers), Recorder())

    def test_a_timestamp_from_the_future_is_refused(self) -> None:
        headers = sendgrid_signer().headers(self.BODY, timestamp=NOW + timedelta(minutes=6))
        with pytest.raises(StaleWebhook):
            _sendgrid().handle(WebhookRequest.of(self.BODY, headers), Recorder())

    def test_a_signed_body_that_is_not_an_array_is_malformed(self) -> None:
        body = b'{"event": "delivered"}'
        with pytest.raises(MalformedWebhook):
            _sendgrid().handle(WebhookRequest.of(body, sendgrid_signer().headers(body)), Recorder())

    @pytest.mark.parametrize("configured", ["not base64 !", "bm90IGEga2V5"])
    def test_a_configured_key_that_is_no_p256_key_is_our_misconfiguration(
        self, configured: str
    ) -> None:
        with pytest.raises(WebhookNotConfigured):
            load_verification_key(configured)


def _mailgun(
    guard: MemoryReplayGuard | None = None, *, key: str = MAILGUN_SIGNING_KEY
) -> tuple[MailgunWebhook, MemoryReplayGuard]:
    guard = guard or MemoryReplayGuard()
    verifier = MailgunSignatureVerifier(key, guard, clock=FixedClock(NOW), max_age=MAX_AGE)
    return MailgunWebhook(verifier), guard


def _mailgun_request(payload: dict[str, Any]) -> WebhookRequest:
    return WebhookRequest.of(json.dumps(payload).encode(), {"Content-Type": "application/json"})


class TestMailgun:
    def test_a_signed_event_verifies_and_its_token_is_remembered_for_twice_the_window(self) -> None:
        webhook, guard = _mailgun()
        payload = mailgun_signed(fixture("mailgun", "delivered.json"), token="t" * 50)
        emit = Recorder()
        webhook.handle(_mailgun_request(payload), emit)
        assert [e.event_type for e in emit.batches[0]] == [FeedbackEventType.DELIVERED]
        assert guard.claimed == {"mailgun:" + "t" * 50: 600}

    def test_a_replayed_token_is_refused(self) -> None:
        webhook, _ = _mailgun()
        payload = mailgun_signed(fixture("mailgun", "delivered.json"))
        webhook.handle(_mailgun_request(payload), Recorder())
        emit = Recorder()
        with pytest.raises(ReplayedWebhook):
            webhook.handle(_mailgun_request(payload), emit)
        assert emit.batches == []

    def test_a_stale_timestamp_is_refused_and_burns_no_token(self) -> None:
        webhook, guard = _mailgun()
        payload = mailgun_signed(
            fixture("mailgun", "delivered.json"), timestamp=NOW - timedelta(minutes=6)
        )
        with pytest.raises(StaleWebhook):
            webhook.handle(_mailgun_request(payload), Recorder())
        assert guard.claimed == {}

    @pytest.mark.parametrize(
        "payload",
        [
            mailgun_signed(fixture("mailgun", "delivered.json"), key="another-key"),
            {**fixture("mailgun", "delivered.json")},  # the documentation's placeholder
            {"event-data": fixture("mailgun", "delivered.json")["event-data"]},  # unsigned
        ],
    )
    def test_forged_events_are_refused_and_burn_no_token(self, payload: dict[str, Any]) -> None:
        webhook, guard = _mailgun()
        emit = Recorder()
        with pytest.raises(InvalidSignature):
            webhook.handle(_mailgun_request(payload), emit)
        assert emit.batches == []
        assert guard.claimed == {}

    def test_our_failure_releases_the_token_so_mailguns_retry_gets_through(self) -> None:
        webhook, guard = _mailgun()
        payload = mailgun_signed(fixture("mailgun", "delivered.json"))
        with pytest.raises(DependencyUnavailable):
            webhook.handle(_mailgun_request(payload), Recorder(fail=True))
        assert guard.claimed == {}
        emit = Recorder()
        webhook.handle(_mailgun_request(payload), emit)
        assert len(emit.batches) == 1
