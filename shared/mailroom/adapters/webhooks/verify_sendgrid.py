"""SendGrid's Signed Event Webhook: ECDSA P-256 with SHA-256 over timestamp + raw body.

SendGrid signs ``X-Twilio-Email-Event-Webhook-Timestamp`` followed by the exact
request body with its private key and sends the base64 DER signature in
``X-Twilio-Email-Event-Webhook-Signature``; the verification key (base64 DER
SubjectPublicKeyInfo, as SendGrid's settings page shows it, or PEM) comes from
configuration. The timestamp is signed, so a captured request cannot be
replayed outside the accepted window; inside it, sg_event_id deduplicates.

Reference: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailroom.adapters.webhooks.base import Clock, WebhookRequest
from mailroom.domain.errors import InvalidSignature, StaleWebhook, WebhookNotConfigured

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"


def load_verification_key(configured: str) -> ec.EllipticCurvePublicKey:
    """The configured key as a P-256 public key; WebhookNotConfigured if it is not one."""
    text = configured.strip()
    try:
        key = (
            serialization.load_pem_public_key(text.encode())
            if text.startswith("-----BEGIN")
            else serialization.load_der_public_key(base64.b64decode(text, validate=True))
        )
    except (ValueError, binascii.Error) as error:
        raise WebhookNotConfigured("SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key") from error
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise WebhookNotConfigured("SENDGRID_WEBHOOK_PUBLIC_KEY is not a P-256 (ECDSA) key")
    return key


class SendGridSignatureVerifier:
    def __init__(
        self, public_key: ec.EllipticCurvePublicKey, *, clock: Clock, max_age: timedelta
    ) -> None:
        self._key = public_key
        self._clock = clock
        self._max_age = max_age

    def verify(self, request: WebhookRequest) -> None:
        signature = request.header(SIGNATURE_HEADER)
        timestamp = request.header(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            raise InvalidSignature(
                "X-Twilio-Email-Event-Webhook-Signature and -Timestamp are required"
            )
        try:
            der_signature = base64.b64decode(signature, validate=True)
            self._key.verify(
                der_signature, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256())
            )
        except (binascii.Error, ValueError, CryptoInvalidSignature) as error:
            raise InvalidSignature("the SendGrid signature does not verify") from error
        # Checked after the signature: an unsigned request learns nothing.
        try:
            signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
        except (ValueError, OverflowError, OSError) as error:
            raise InvalidSignature("the SendGrid timestamp is not a Unix time") from error
        if abs(self._clock() - signed_at) > self._max_age:
            raise StaleWebhook("the SendGrid timestamp is outside the accepted window")
