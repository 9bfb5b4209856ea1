"""The local runner's SNS certificate is trusted off real AWS only (issue 22)."""

from __future__ import annotations

from typing import Any

import pytest

from mailroom.adapters.webhooks.fetch import AwsHttpsFetcher
from mailroom.adapters.webhooks.registry import WebhookRegistry
from mailroom.config import Settings
from mailroom.domain.errors import UntrustedCertificateUrl
from mailroomctl.local_webhooks import LOCAL_SES_TOPIC_ARN, LocalWebhookKeys, sns_notification

KEYS = LocalWebhookKeys.generate()


class NeverFetch(AwsHttpsFetcher):
    def fetch(self, url: str) -> bytes:
        raise AssertionError(f"fetched {url}")


def _registry(**settings: Any) -> WebhookRegistry:
    return WebhookRegistry(
        Settings(
            sns_topic_arns=LOCAL_SES_TOPIC_ARN,
            local_sns_signing_certificate=KEYS.sns_certificate_pem,
            **settings,
        ),
        fetcher=NeverFetch(),
        replay_guard=None,  # type: ignore[arg-type]  # SES needs none
    )


def _signed() -> dict[str, Any]:
    return KEYS.sign_sns(sns_notification({"eventType": "Delivery", "mail": {}}))


def test_a_local_stack_verifies_its_own_sns_messages_without_fetching() -> None:
    # GIVEN a stack on LocalStack or moto, with the runner's certificate
    registry = _registry(AWS_ENDPOINT_URL="http://127.0.0.1:4566")
    # WHEN a message signed with the runner's key arrives
    verified = registry.ses().validate_lambda_record(_signed())
    # THEN it verifies against the configured certificate (nothing fetched)
    assert verified.topic_arn == LOCAL_SES_TOPIC_ARN


def test_on_real_aws_the_local_certificate_is_ignored() -> None:
    # GIVEN the same certificate configured on a stack talking to real AWS
    registry = _registry(AWS_ENDPOINT_URL="")
    # WHEN a message claims the local certificate URL
    # THEN it is refused before any fetch: only AWS's own certificate host counts
    with pytest.raises(UntrustedCertificateUrl):
        registry.ses().validate_lambda_record(_signed())
