"""SES domain identities: when SES carries the mail, it signs with Easy DKIM.

``CreateEmailIdentity`` for a domain answers the DKIM tokens whose CNAMEs
(``<token>._domainkey.<domain>`` → ``<token>.dkim.amazonses.com``) the client
publishes instead of our own key. ``DeleteEmailIdentity`` removes it again when
the domain is deleted, but only an identity Mailroom created: one that existed
before the domain was registered (an operator's own, say) is left alone.
boto3 honours ``AWS_ENDPOINT_URL`` (moto in tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailroom.domain.errors import DependencyUnavailable


@dataclass(frozen=True, slots=True)
class SesIdentity:
    """A domain identity's DKIM tokens, and whether this call created it."""

    tokens: list[str]
    created: bool


class SesIdentities:
    def __init__(self, region: str, *, timeout_seconds: float = 10.0) -> None:
        self._region = region
        self._timeout = timeout_seconds
        self._client: Any = None
        self._v1: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            self._client = boto3.client(
                "sesv2",
                region_name=self._region,
                config=BotoConfig(
                    connect_timeout=self._timeout,
                    read_timeout=self._timeout,
                    retries={"max_attempts": 2, "mode": "standard"},
                ),
            )
        return self._client

    def create_identity(self, domain: str) -> SesIdentity:
        """The DKIM tokens of ``domain``'s identity, created now or existing already."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # Looked up first: whether the identity was there before decides
            # whether deleting the domain later may delete it. (AWS answers
            # AlreadyExists to a second create; moto overwrites silently.)
            answer = self._existing(domain)
            created = answer is None
            if answer is None:
                try:
                    answer = self.client.create_email_identity(EmailIdentity=domain)
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") != "AlreadyExistsException":
                        raise
                    created = False  # made by someone else in between
                    answer = self.client.get_email_identity(EmailIdentity=domain)
            tokens = (answer.get("DkimAttributes") or {}).get("Tokens") or []
            if not tokens:
                # moto's v2 answer carries no tokens; v1 VerifyDomainDkim
                # answers the same identity's tokens (AWS and moto alike).
                tokens = self._v1_client().verify_domain_dkim(Domain=domain)["DkimTokens"]
        except (ClientError, BotoCoreError) as error:
            raise DependencyUnavailable(
                f"SES did not create the domain identity: {error}"
            ) from error
        return SesIdentity([str(token) for token in tokens], created)

    def _existing(self, domain: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            answer: dict[str, Any] = self.client.get_email_identity(EmailIdentity=domain)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NotFoundException":
                return None
            raise
        return answer

    def delete_identity(self, domain: str) -> bool:
        """Delete ``domain``'s identity; False if it was gone already (not an error)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_email_identity(EmailIdentity=domain)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NotFoundException":
                return False
            raise DependencyUnavailable(
                f"SES did not delete the domain identity: {error}"
            ) from error
        except BotoCoreError as error:
            raise DependencyUnavailable(
                f"SES did not delete the domain identity: {error}"
            ) from error
        return True

    def _v1_client(self) -> Any:
        if self._v1 is None:
            import boto3

            self._v1 = boto3.client("ses", region_name=self._region)
        return self._v1
