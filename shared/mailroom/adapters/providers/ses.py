"""Amazon SES v2 ``SendEmail`` with raw MIME: the same bytes every provider sends.

boto3 honours AWS_ENDPOINT_URL by itself, so this reaches AWS, LocalStack or
moto unchanged. Error codes after the SESv2 API reference (SendEmail errors,
plus AWS's common errors); anything unlisted is classified by HTTP status.

SES does not support SMTPUTF8: addresses must be 7-bit ASCII, IDN domains
as punycode, display names as encoded words (the SESv2 ``Destination``
reference). The ASCII form of the MIME is exactly that; a non-ASCII local
part is refused here as permanent, before a request is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from mailroom.adapters.providers.base import (
    EmailProvider,
    FailureKind,
    ProviderError,
    ProviderReceipt,
    refuse_smtputf8,
)
from mailroom.domain.mime import OutgoingEmail

KIND_BY_ERROR_CODE: Mapping[str, FailureKind] = {
    # Throttling and quotas: slow down, or send elsewhere for now.
    "TooManyRequestsException": FailureKind.TRANSIENT,
    "Throttling": FailureKind.TRANSIENT,
    "ThrottlingException": FailureKind.TRANSIENT,
    "LimitExceededException": FailureKind.TRANSIENT,
    "InternalFailure": FailureKind.TRANSIENT,
    "InternalServiceErrorException": FailureKind.TRANSIENT,
    "ServiceUnavailable": FailureKind.TRANSIENT,
    # The account, identity or credentials: an operator must act.
    "AccountSuspendedException": FailureKind.CONFIG,
    "SendingPausedException": FailureKind.CONFIG,
    "MailFromDomainNotVerifiedException": FailureKind.CONFIG,
    "NotFoundException": FailureKind.CONFIG,  # the configuration set
    "AccessDeniedException": FailureKind.CONFIG,
    "AccessDenied": FailureKind.CONFIG,
    "UnrecognizedClientException": FailureKind.CONFIG,
    "InvalidClientTokenId": FailureKind.CONFIG,
    "SignatureDoesNotMatch": FailureKind.CONFIG,
    "IncompleteSignature": FailureKind.CONFIG,
    "ExpiredToken": FailureKind.CONFIG,
    "ExpiredTokenException": FailureKind.CONFIG,
    # This message as it is.
    "BadRequestException": FailureKind.PERMANENT,
    "InvalidParameterValue": FailureKind.PERMANENT,
}
# SES reports an unverified sender (or, in the sandbox, recipient) as
# MessageRejected, the same code as content it refuses; only the text tells
# them apart. AWS says "Email address is not verified"; moto says "Did not
# have authority to send from email".
_UNVERIFIED_IDENTITY_PHRASES = ("not verified", "did not have authority")


class SesProvider(EmailProvider):
    name = "ses"

    def __init__(
        self,
        region: str,
        *,
        configuration_set: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._region = region
        self._configuration_set = configuration_set
        self._timeout = timeout_seconds
        self._client: Any = None
        self._v1_client: Any = None
        # Set once SES v2 answered "not implemented" (LocalStack's free build):
        # every later send goes straight to SES v1.
        self.uses_v1 = False

    @property
    def client(self) -> Any:
        if self._client is None:
            # Imported on first send, not at cold start (issue 8): only the
            # worker sends, and only when SES is in the provider order.
            import boto3

            self._client = boto3.client("sesv2", region_name=self._region, config=self._config())
        return self._client

    @property
    def v1_client(self) -> Any:
        if self._v1_client is None:
            import boto3

            self._v1_client = boto3.client("ses", region_name=self._region, config=self._config())
        return self._v1_client

    def _config(self) -> Any:
        from botocore.config import Config as BotoConfig

        # One try per call: the chain fails over or the queue retries
        # with backoff, which beats botocore retrying inside one send.
        return BotoConfig(
            connect_timeout=self._timeout,
            read_timeout=self._timeout,
            retries={"max_attempts": 1, "mode": "standard"},
        )

    def send(self, email: OutgoingEmail) -> ProviderReceipt:
        refuse_smtputf8(self.name, email)
        request: dict[str, Any] = {
            "FromEmailAddress": email.envelope_from,
            # With raw content these are the envelope: Bcc recipients are here
            # and, rightly, in no header.
            "Destination": {"ToAddresses": list(email.envelope_recipients)},
            "Content": {"Raw": {"Data": email.mime}},
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        try:
            if self.uses_v1:
                return self._send_v1(email)
            try:
                answer = self.client.send_email(**request)
            except ClientError as error:
                if not _v2_unavailable(error):
                    raise
                # SES v2 is not emulated here (LocalStack's free build answers
                # 501): SES v1 SendRawEmail sends the same MIME.
                self.uses_v1 = True
                return self._send_v1(email)
        except ClientError as error:
            raise classify_ses_error(error) from error
        except (NoCredentialsError, PartialCredentialsError) as error:
            raise ProviderError(self.name, FailureKind.CONFIG, str(error)) from error
        except BotoCoreError as error:
            # Endpoint unreachable, connect or read timeout.
            raise ProviderError(
                self.name, FailureKind.TRANSIENT, f"request failed: {error}"
            ) from error
        return ProviderReceipt(provider=self.name, provider_msg_id=str(answer["MessageId"]))

    def _send_v1(self, email: OutgoingEmail) -> ProviderReceipt:
        request: dict[str, Any] = {
            "Source": email.envelope_from,
            "Destinations": list(email.envelope_recipients),
            "RawMessage": {"Data": email.mime},
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        answer = self.v1_client.send_raw_email(**request)
        return ProviderReceipt(provider=self.name, provider_msg_id=str(answer["MessageId"]))


def _v2_unavailable(error: ClientError) -> bool:
    """Whether SES v2 itself is missing at this endpoint (not a refusal of this message)."""
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    code = str(error.response.get("Error", {}).get("Code", ""))
    return status == 501 or code in {"NotImplemented", "NotImplementedException"}


def classify_ses_error(error: ClientError) -> ProviderError:
    """The failure kind of an SES answer: by error code, else by HTTP status."""
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    text = str(details.get("Message", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code == "MessageRejected":
        unverified = any(phrase in text.lower() for phrase in _UNVERIFIED_IDENTITY_PHRASES)
        kind = FailureKind.CONFIG if unverified else FailureKind.PERMANENT
    elif code in KIND_BY_ERROR_CODE:
        kind = KIND_BY_ERROR_CODE[code]
    elif status == 429 or status >= 500:
        kind = FailureKind.TRANSIENT
    elif status in (401, 403):
        kind = FailureKind.CONFIG
    else:
        kind = FailureKind.PERMANENT
    return ProviderError(SesProvider.name, kind, f"{code}: {text}")
