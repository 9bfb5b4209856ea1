"""Signing provider fixtures with keys and certificates the tests make themselves.

Nothing here touches the network: the SNS "certificate URL" is served by a
StaticFetcher holding a self-signed certificate generated once per run.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from mailroom.adapters.webhooks.verify_sns import string_to_sign
from tests.events import load_event, with_body, with_headers

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "providers"
TOPIC_ARN = "arn:aws:sns:us-west-2:123456789012:MyTopic"
CERT_URL = (
    "https://sns.us-west-2.amazonaws.com/"
    "SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
)
# The fixed "now" every verification in the tests reads.
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MAILGUN_SIGNING_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


def fixture(provider: str, name: str) -> Any:
    return json.loads((FIXTURES / provider / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class SnsSigner:
    key: rsa.RSAPrivateKey
    certificate_pem: bytes

    def sign(self, envelope: dict[str, Any], *, version: str = "1") -> dict[str, Any]:
        signed = dict(envelope)
        signed["SignatureVersion"] = version
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(string_to_sign(signed).encode(), padding.PKCS1v15(), digest)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed


@cache
def sns_signer() -> SnsSigner:
    """A self-signed certificate standing in for AWS's, valid a day either side of NOW."""
    return _sns_signer(NOW - timedelta(days=1), NOW + timedelta(days=1))


@cache
def expired_sns_signer() -> SnsSigner:
    return _sns_signer(NOW - timedelta(days=30), NOW - timedelta(days=1))


def _sns_signer(not_before: datetime, not_after: datetime) -> SnsSigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return SnsSigner(key, certificate.public_bytes(serialization.Encoding.PEM))


def ses_envelope(
    ses_payload: dict[str, Any] | str, *, message_id: str | None = None, version: str = "1"
) -> dict[str, Any]:
    """The SNS Notification fixture carrying this SES payload, signed."""
    envelope = fixture("ses", "sns-notification.json")
    envelope["Message"] = ses_payload if isinstance(ses_payload, str) else json.dumps(ses_payload)
    envelope["MessageId"] = message_id or str(uuid.uuid4())
    del envelope["Subject"]  # SES publishes without one
    return sns_signer().sign(envelope, version=version)


def sns_lambda_event(
    ses_payload: dict[str, Any], *, message_id: str | None = None
) -> dict[str, Any]:
    """The SNS→Lambda event fixture carrying this SES payload, signed as SNS signs it."""
    event = fixture("ses", "sns-lambda-event.json")
    record = event["Records"][0]["Sns"]
    record["Message"] = json.dumps(ses_payload)
    record["MessageId"] = message_id or str(uuid.uuid4())
    record["SigningCertUrl"] = CERT_URL
    record["Subject"] = None
    # SNS signs the HTTP field names; Lambda only renames two unsigned ones.
    signable = {k: v for k, v in record.items() if k != "Subject"}
    record["Signature"] = sns_signer().sign(signable)["Signature"]
    return dict(event)


@dataclass(frozen=True)
class SendGridSigner:
    key: ec.EllipticCurvePrivateKey

    @property
    def public_key(self) -> str:
        """As SendGrid's settings page shows it: base64 DER SubjectPublicKeyInfo."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, *, timestamp: datetime = NOW) -> dict[str, str]:
        stamp = str(int(timestamp.timestamp()))
        signature = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }


@cache
def sendgrid_signer() -> SendGridSigner:
    return SendGridSigner(ec.generate_private_key(ec.SECP256R1()))


def mailgun_signed(
    body: dict[str, Any],
    *,
    timestamp: datetime = NOW,
    token: str | None = None,
    key: str = MAILGUN_SIGNING_KEY,
) -> dict[str, Any]:
    signed = copy.deepcopy(body)
    stamp = str(int(timestamp.timestamp()))
    token = token or secrets.token_hex(25)
    digest = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    signed["signature"] = {"timestamp": stamp, "token": token, "signature": digest}
    return signed


def webhook_event(provider: str, body: str | bytes, **headers: str | None) -> dict[str, Any]:
    """The canonical API Gateway event for POST /webhooks/<provider> with this body."""
    canonical = {
        "ses": "webhooks/ses-sns-notification",
        "sendgrid": "webhooks/sendgrid-batch",
        "mailgun": "webhooks/mailgun-delivered",
    }.get(provider, "webhooks/mailgun-delivered")
    event = load_event(canonical)
    event["path"] = f"/webhooks/{provider}"
    event["pathParameters"] = {"provider": provider}
    with_body(event, body.decode() if isinstance(body, bytes) else body)
    return with_headers(event, **headers)
