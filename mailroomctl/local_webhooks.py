"""The local stack's own provider keys, and provider events signed with them (issue 22).

`make dev` configures each provider webhook with a key generated here and kept
in .local/webhook-keys/: an ECDSA P-256 pair for SendGrid's Signed Event
Webhook, a Mailgun signing key, and an RSA key with a self-signed certificate
for a local SNS topic (its SigningCertURL is https://sns.localhost/..., which
the verifier honours only off real AWS). ``mailroomctl simulate`` and `make
sam-env` sign events with the same keys, so the whole feedback path (signature,
parsing, the message's history, suppression) runs on a laptop.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from mailroom.adapters.webhooks.verify_sns import LOCAL_SIGNING_CERT_URL, string_to_sign

LOCAL_SES_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:mailroom-local-ses-feedback"
KINDS = ("bounce", "complaint", "delivery", "open", "click")
PROVIDERS = ("ses", "sendgrid", "mailgun")
CERTIFICATE_DAYS = 3650


@dataclass(frozen=True, slots=True)
class LocalWebhookKeys:
    sendgrid_private_key: ec.EllipticCurvePrivateKey
    mailgun_signing_key: str
    sns_private_key: rsa.RSAPrivateKey
    sns_certificate_pem: str

    @classmethod
    def load_or_create(cls, folder: Path) -> LocalWebhookKeys:
        """The keys kept in ``folder``; new ones (written there, owner-only) if any is missing."""
        paths = {
            name: folder / name
            for name in ("sendgrid-private.pem", "mailgun-signing-key", "sns-private.pem")
        }
        certificate_path = folder / "sns-certificate.pem"
        if all(path.is_file() for path in (*paths.values(), certificate_path)):
            sendgrid = serialization.load_pem_private_key(
                paths["sendgrid-private.pem"].read_bytes(), password=None
            )
            sns = serialization.load_pem_private_key(
                paths["sns-private.pem"].read_bytes(), password=None
            )
            if isinstance(sendgrid, ec.EllipticCurvePrivateKey) and isinstance(
                sns, rsa.RSAPrivateKey
            ):
                return cls(
                    sendgrid_private_key=sendgrid,
                    mailgun_signing_key=paths["mailgun-signing-key"].read_text().strip(),
                    sns_private_key=sns,
                    sns_certificate_pem=certificate_path.read_text(),
                )
        keys = cls.generate()
        keys.write(folder)
        return keys

    @classmethod
    def generate(cls) -> LocalWebhookKeys:
        sns_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.localhost")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(sns_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
            .sign(sns_key, hashes.SHA256())
        )
        return cls(
            sendgrid_private_key=ec.generate_private_key(ec.SECP256R1()),
            mailgun_signing_key=secrets.token_hex(32),
            sns_private_key=sns_key,
            sns_certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        )

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = serialization.PrivateFormat.PKCS8
        files = {
            "sendgrid-private.pem": self.sendgrid_private_key.private_bytes(
                serialization.Encoding.PEM, private, serialization.NoEncryption()
            ),
            "sns-private.pem": self.sns_private_key.private_bytes(
                serialization.Encoding.PEM, private, serialization.NoEncryption()
            ),
            "mailgun-signing-key": (self.mailgun_signing_key + "\n").encode(),
            "sns-certificate.pem": self.sns_certificate_pem.encode(),
        }
        for name, content in files.items():
            path = folder / name
            path.write_bytes(content)
            path.chmod(0o600)

    @property
    def sendgrid_public_key(self) -> str:
        """Base64 DER, as SendGrid's settings page shows it (SENDGRID_WEBHOOK_PUBLIC_KEY)."""
        der = self.sendgrid_private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def function_environment(self) -> dict[str, str]:
        """What the webhooks function needs to verify events signed with these keys."""
        return {
            "SENDGRID_WEBHOOK_PUBLIC_KEY": self.sendgrid_public_key,
            "MAILGUN_WEBHOOK_SIGNING_KEY": self.mailgun_signing_key,
            "LOCAL_SNS_SIGNING_CERTIFICATE": self.sns_certificate_pem,
        }

    # -- signing, as each provider does -------------------------------------

    def sendgrid_headers(self, body: bytes, *, now: float | None = None) -> dict[str, str]:
        timestamp = str(int(now if now is not None else time.time()))
        signature = self.sendgrid_private_key.sign(
            timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }

    def mailgun_signature(self, *, now: float | None = None) -> dict[str, str]:
        timestamp = str(int(now if now is not None else time.time()))
        token = secrets.token_hex(25)
        mac = hmac.HMAC(self.mailgun_signing_key.encode(), hashes.SHA256())
        mac.update((timestamp + token).encode())
        return {"timestamp": timestamp, "token": token, "signature": mac.finalize().hex()}

    def sign_sns(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """``envelope`` from the local topic, signed (SignatureVersion 2) with the local key."""
        signed = {
            **envelope,
            "TopicArn": LOCAL_SES_TOPIC_ARN,
            "SignatureVersion": "2",
            "SigningCertURL": LOCAL_SIGNING_CERT_URL,
        }
        signed.pop("SigningCertUrl", None)
        signature = self.sns_private_key.sign(
            string_to_sign(signed).encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed


# -- provider events for one message ------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A webhook POST as the provider would make it."""

    path: str
    headers: dict[str, str]
    body: bytes


def simulated_request(
    keys: LocalWebhookKeys,
    provider: str,
    kind: str,
    *,
    message_id: str,
    recipient: str,
    provider_msg_id: str | None,
    now: datetime | None = None,
) -> SignedRequest:
    """The ``kind`` event for one message, signed and shaped as ``provider`` posts it."""
    if provider not in PROVIDERS or kind not in KINDS:
        raise ValueError(f"unknown provider {provider!r} or event {kind!r}")
    at = now or datetime.now(UTC)
    header_id = f"<{message_id}@mailroom.local>"
    if provider == "ses":
        body = json.dumps(
            keys.sign_sns(sns_notification(_ses_event(kind, recipient, header_id, at)))
        ).encode()
        return SignedRequest(
            "/webhooks/ses",
            {
                "Content-Type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": "Notification",
                "x-amz-sns-topic-arn": LOCAL_SES_TOPIC_ARN,
            },
            body,
        )
    if provider == "sendgrid":
        item: dict[str, Any] = {
            "email": recipient,
            "timestamp": int(at.timestamp()),
            "event": {
                "bounce": "bounce",
                "complaint": "spamreport",
                "delivery": "delivered",
                "open": "open",
                "click": "click",
            }[kind],
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": f"{provider_msg_id or uuid.uuid4().hex}.filter0001",
            "mailroom_message_id": header_id,
        }
        if kind == "bounce":
            item.update(type="bounce", reason="550 5.1.1 The email account does not exist")
        if kind == "click":
            item["url"] = "https://example.com/"
        body = json.dumps([item]).encode()
        headers = {"Content-Type": "application/json", **keys.sendgrid_headers(body)}
        return SignedRequest("/webhooks/sendgrid", headers, body)
    data: dict[str, Any] = {
        "event": {
            "bounce": "failed",
            "complaint": "complained",
            "delivery": "delivered",
            "open": "opened",
            "click": "clicked",
        }[kind],
        "id": uuid.uuid4().hex[:22],
        "timestamp": at.timestamp(),
        "recipient": recipient,
        "message": {"headers": {"message-id": header_id.strip("<>"), "to": recipient}},
    }
    if kind == "bounce":
        data.update(
            severity="permanent",
            reason="bounce",
            **{"delivery-status": {"code": 550, "message": "5.1.1 no such user"}},
        )
    body = json.dumps({"signature": keys.mailgun_signature(), "event-data": data}).encode()
    return SignedRequest("/webhooks/mailgun", {"Content-Type": "application/json"}, body)


def sns_notification(message: dict[str, Any]) -> dict[str, Any]:
    """An unsigned SNS Notification envelope carrying ``message``."""
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": LOCAL_SES_TOPIC_ARN,
        "Message": json.dumps(message),
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }


def _ses_event(kind: str, recipient: str, header_id: str, at: datetime) -> dict[str, Any]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    mail = {
        "timestamp": stamp,
        "source": "noreply@example.com",
        "messageId": f"0100{uuid.uuid4().hex}-000000",
        "destination": [recipient],
        "commonHeaders": {"messageId": header_id, "to": [recipient]},
    }
    event: dict[str, Any] = {"eventType": kind.capitalize(), "mail": mail}
    if kind == "bounce":
        event["bounce"] = {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "timestamp": stamp,
            "feedbackId": uuid.uuid4().hex,
            "bouncedRecipients": [
                {"emailAddress": recipient, "status": "5.1.1", "action": "failed"}
            ],
        }
    elif kind == "complaint":
        event["complaint"] = {
            "timestamp": stamp,
            "feedbackId": uuid.uuid4().hex,
            "complaintFeedbackType": "abuse",
            "complainedRecipients": [{"emailAddress": recipient}],
        }
    elif kind == "delivery":
        event["delivery"] = {
            "timestamp": stamp,
            "recipients": [recipient],
            "smtpResponse": "250 2.0.0 OK",
        }
    elif kind == "open":
        event["open"] = {"timestamp": stamp, "ipAddress": "192.0.2.1", "userAgent": "Mailroom"}
    else:
        event["click"] = {
            "timestamp": stamp,
            "link": "https://example.com/",
            "ipAddress": "192.0.2.1",
        }
    return event
