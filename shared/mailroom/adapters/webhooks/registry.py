"""The provider webhooks of this deployment, built from settings on first use.

Built once per container and kept: the SNS verifier holds the certificate
cache, so a warm function fetches each AWS signing certificate once. The
provider modules (and the cryptography package they need) are imported only
when a webhook is first built, so the other functions' cold starts do not pay
for them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mailroom.adapters.webhooks.base import Clock, ProviderWebhook, system_clock
from mailroom.adapters.webhooks.fetch import AwsHttpsFetcher
from mailroom.adapters.webhooks.replay import ReplayGuard
from mailroom.config import Settings
from mailroom.domain.errors import UnknownWebhookProvider, WebhookNotConfigured

if TYPE_CHECKING:
    from mailroom.adapters.webhooks.mailgun import MailgunWebhook
    from mailroom.adapters.webhooks.sendgrid import SendGridWebhook
    from mailroom.adapters.webhooks.ses import SesWebhook


class WebhookRegistry:
    def __init__(
        self,
        settings: Settings,
        *,
        fetcher: AwsHttpsFetcher,
        replay_guard: ReplayGuard,
        clock: Clock = system_clock,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._replay_guard = replay_guard
        self.clock = clock
        self._built: dict[str, ProviderWebhook[Any]] = {}
        self._builders: dict[str, Callable[[], ProviderWebhook[Any]]] = {
            "ses": self._build_ses,
            "sendgrid": self._build_sendgrid,
            "mailgun": self._build_mailgun,
        }

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self._builders)

    def get(self, provider: str) -> ProviderWebhook[Any]:
        if provider not in self._builders:
            raise UnknownWebhookProvider(
                f"no webhook for provider '{provider[:40]}'",
                details=[{"providers": list(self._builders)}],
            )
        if provider not in self._built:
            self._built[provider] = self._builders[provider]()
        return self._built[provider]

    def ses(self) -> SesWebhook:
        from mailroom.adapters.webhooks.ses import SesWebhook

        webhook = self.get("ses")
        assert isinstance(webhook, SesWebhook)
        return webhook

    @property
    def _max_age(self) -> timedelta:
        return timedelta(seconds=self._settings.webhook_max_age_seconds)

    def _build_ses(self) -> SesWebhook:
        from mailroom.adapters.webhooks.ses import SesWebhook
        from mailroom.adapters.webhooks.verify_sns import SnsVerifier

        topics = self._settings.sns_topic_allowlist
        if not topics:
            raise WebhookNotConfigured("SNS_TOPIC_ARNS is empty: no SNS topic is trusted")
        # The local runner's own SNS certificate, trusted only off real AWS.
        local = self._settings.local_sns_signing_certificate
        verifier = SnsVerifier(
            self._fetcher,
            allowed_topics=topics,
            clock=self.clock,
            local_certificate=local.encode() if local and self._settings.aws_endpoint_url else None,
        )
        return SesWebhook(verifier, self._fetcher)

    def _build_sendgrid(self) -> SendGridWebhook:
        from mailroom.adapters.webhooks.sendgrid import SendGridWebhook
        from mailroom.adapters.webhooks.verify_sendgrid import (
            SendGridSignatureVerifier,
            load_verification_key,
        )

        configured = self._settings.sendgrid_webhook_public_key
        if not configured:
            raise WebhookNotConfigured("SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        verifier = SendGridSignatureVerifier(
            load_verification_key(configured), clock=self.clock, max_age=self._max_age
        )
        return SendGridWebhook(verifier)

    def _build_mailgun(self) -> MailgunWebhook:
        from mailroom.adapters.webhooks.mailgun import MailgunWebhook
        from mailroom.adapters.webhooks.verify_mailgun import MailgunSignatureVerifier

        key = self._settings.mailgun_webhook_signing_key
        if key is None or not key.get_secret_value():
            raise WebhookNotConfigured("MAILGUN_WEBHOOK_SIGNING_KEY is not set")
        verifier = MailgunSignatureVerifier(
            key.get_secret_value(), self._replay_guard, clock=self.clock, max_age=self._max_age
        )
        return MailgunWebhook(verifier)
