"""Amazon SNS message signatures (SignatureVersion 1 and 2), topic allowlist, certificates.

What is checked, in this order, before anything in the message is believed:

1. ``Type`` is one SNS sends and every field it signs is a string;
2. ``TopicArn`` is on the configured allowlist (so no request from someone
   else's topic makes us fetch anything);
3. ``SigningCertURL`` is ``https://sns.<region>.amazonaws.com/<name>.pem``
   with the topic's own region: no other host, scheme, port or query;
4. the certificate from that URL (fetched over verified TLS, cached) is
   within its validity period and holds an RSA key;
5. ``Signature`` verifies with it: SHA1withRSA for version 1, SHA256withRSA
   for version 2, over the fields AWS documents, in its order.

Reference: https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailroom.adapters.webhooks.base import Clock
from mailroom.adapters.webhooks.fetch import AwsHttpsFetcher
from mailroom.domain.errors import (
    InvalidSignature,
    MalformedWebhook,
    TopicNotAllowed,
    UntrustedCertificateUrl,
)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# The fields each message type signs, in the order of the string to sign.
# "Subject" is signed only when present.
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    UNSUBSCRIBE_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}
_SNS_HOST = re.compile(r"^sns\.([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com$")
_TOPIC_ARN = re.compile(
    r"^arn:aws(?:-us-gov)?:sns:([a-z]{2}(?:-[a-z]+)+-\d):\d{12}:[A-Za-z0-9_.-]{1,256}$"
)


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """An SNS message whose signature and topic have been verified."""

    type: str
    message_id: str
    topic_arn: str
    timestamp: str
    message: str
    subject: str | None
    token: str | None
    subscribe_url: str | None
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _CachedKey:
    key: rsa.RSAPublicKey
    not_before: datetime
    not_after: datetime


# The SigningCertURL of messages the local runner's own SNS key signs
# (`mailroomctl simulate`): .localhost never resolves outside the machine, and
# the verifier maps it to the configured certificate instead of fetching it.
LOCAL_SIGNING_CERT_URL = "https://sns.localhost/mailroom-local.pem"


class SnsVerifier:
    """Verifies SNS messages; holds the certificate cache for the life of the container."""

    def __init__(
        self,
        fetcher: AwsHttpsFetcher,
        *,
        allowed_topics: frozenset[str],
        clock: Clock,
        cache_size: int = 16,
        local_certificate: bytes | None = None,
    ) -> None:
        self._local = _load_certificate(local_certificate) if local_certificate else None
        self._fetcher = fetcher
        self._allowed_topics = allowed_topics
        self._clock = clock
        self._cache: OrderedDict[str, _CachedKey] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def verify(self, envelope: Mapping[str, Any]) -> SnsMessage:
        message_type = envelope.get("Type")
        if message_type not in SIGNED_FIELDS:
            raise MalformedWebhook(f"unknown SNS message Type {str(message_type)[:40]!r}")
        for name in (*SIGNED_FIELDS[message_type], "SignatureVersion", "Signature"):
            value = envelope.get(name)
            if name == "Subject" and value is None:
                continue
            if not isinstance(value, str) or (not value and name != "Message"):
                raise MalformedWebhook(f"the SNS message has no string {name}")
        topic_arn: str = envelope["TopicArn"]
        # Before any fetch: a stranger's topic must not make us reach out.
        if topic_arn not in self._allowed_topics:
            raise TopicNotAllowed(f"SNS topic {topic_arn[:300]} is not on the allowlist")
        region = _topic_region(topic_arn)
        hash_type = SIGNATURE_HASHES.get(envelope["SignatureVersion"])
        if hash_type is None:
            raise InvalidSignature("unsupported SNS SignatureVersion")
        cert_url = envelope.get("SigningCertURL")
        if not isinstance(cert_url, str):
            raise MalformedWebhook("the SNS message has no SigningCertURL")
        local = self._local is not None and cert_url == LOCAL_SIGNING_CERT_URL
        if not local:
            check_certificate_url(cert_url, region)
        try:
            signature = base64.b64decode(envelope["Signature"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise InvalidSignature("the SNS signature is not base64") from error
        key = self._local_key() if local else self._public_key(cert_url)
        try:
            key.verify(
                signature, string_to_sign(envelope).encode(), padding.PKCS1v15(), hash_type()
            )
        except CryptoInvalidSignature as error:
            raise InvalidSignature("the SNS signature does not verify") from error
        return SnsMessage(
            type=message_type,
            message_id=envelope["MessageId"],
            topic_arn=topic_arn,
            timestamp=envelope["Timestamp"],
            message=envelope["Message"],
            subject=envelope.get("Subject"),
            token=envelope.get("Token"),
            subscribe_url=envelope.get("SubscribeURL"),
            fields=envelope,
        )

    def _local_key(self) -> rsa.RSAPublicKey:
        assert self._local is not None
        if not self._local.not_before <= self._clock() <= self._local.not_after:
            raise InvalidSignature("the local SNS signing certificate is not valid now")
        return self._local.key

    def _public_key(self, url: str) -> rsa.RSAPublicKey:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None:
                self._cache.move_to_end(url)
        if cached is None:
            cached = _load_certificate(self._fetcher.fetch(url))
            with self._lock:
                self._cache[url] = cached
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if not cached.not_before <= now <= cached.not_after:
            raise InvalidSignature("the SNS signing certificate is not valid now")
        return cached.key

    @property
    def cached_certificates(self) -> int:
        return len(self._cache)


def string_to_sign(envelope: Mapping[str, Any]) -> str:
    """``Name\\nvalue\\n`` for each signed field present, in AWS's order."""
    return "".join(
        f"{name}\n{envelope[name]}\n"
        for name in SIGNED_FIELDS[envelope["Type"]]
        if envelope.get(name) is not None
    )


def check_certificate_url(url: str, region: str) -> None:
    """Refuse any SigningCertURL but https://sns.<topic region>.amazonaws.com/<name>.pem."""
    parts = urlsplit(url)
    host_match = _SNS_HOST.match(parts.hostname or "")
    if (
        parts.scheme != "https"
        or host_match is None
        or host_match.group(1) != region
        or parts.netloc != parts.hostname  # no port, no user:password@
        or parts.query
        or parts.fragment
        or not re.fullmatch(r"/[A-Za-z0-9._-]+\.pem", parts.path)
    ):
        raise UntrustedCertificateUrl(
            f"SigningCertURL must be https://sns.{region}.amazonaws.com/<name>.pem"
        )


def check_subscribe_url(message: SnsMessage) -> str:
    """The SubscribeURL, if it is SNS's own ConfirmSubscription link for this very topic."""
    url = message.subscribe_url or ""
    parts = urlsplit(url)
    host_match = _SNS_HOST.match(parts.hostname or "")
    query = parse_qs(parts.query, keep_blank_values=True)
    if (
        parts.scheme != "https"
        or host_match is None
        or host_match.group(1) != _topic_region(message.topic_arn)
        or parts.netloc != parts.hostname
        or parts.path not in ("", "/")
        or query.get("Action") != ["ConfirmSubscription"]
        or query.get("TopicArn") != [message.topic_arn]
        or query.get("Token") != [message.token]
    ):
        raise UntrustedCertificateUrl("SubscribeURL is not SNS's confirmation link for the topic")
    return url


def _topic_region(topic_arn: str) -> str:
    match = _TOPIC_ARN.match(topic_arn)
    if match is None:
        raise MalformedWebhook("TopicArn is not an SNS topic ARN")
    return match.group(1)


def _load_certificate(pem: bytes) -> _CachedKey:
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise InvalidSignature("the SNS signing certificate cannot be read") from error
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidSignature("the SNS signing certificate does not hold an RSA key")
    return _CachedKey(
        key=key,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )
