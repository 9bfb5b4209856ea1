"""Test mode's provider: records the message, hands it to no one, reports simulated feedback.

The worker routes every test message here, whatever the provider chain and
its breakers say (services/provider_chain.py, ``send_sandboxed``). What it
"sends" is recorded in PostgreSQL by the worker like any send (the message's
``sent`` event names provider ``sandbox``); the feedback it reports comes back
on the receipt and is applied by services/feedback.py, the function the
SES, SendGrid and Mailgun webhooks use, once the send is recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from mailroom.adapters.providers.base import EmailProvider, ProviderReceipt
from mailroom.domain.mime import OutgoingEmail
from mailroom.domain.sandbox import SANDBOX_PROVIDER, simulated_feedback


class SandboxProvider(EmailProvider):
    name = SANDBOX_PROVIDER

    def __init__(self, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._now = now

    def send(self, email: OutgoingEmail) -> ProviderReceipt:
        provider_msg_id = f"sandbox-{uuid.uuid4().hex}"
        feedback = simulated_feedback(
            provider_msg_id=provider_msg_id,
            message_id_header=email.message_id,
            recipients=email.envelope_recipients,
            at=self._now(),
        )
        return ProviderReceipt(SANDBOX_PROVIDER, provider_msg_id, tuple(feedback))
