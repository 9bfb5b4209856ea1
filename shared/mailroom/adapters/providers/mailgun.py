"""Mailgun's messages API over HTTPS, in its MIME form.

``POST /v3/{domain}/messages.mime`` takes the finished MIME as the ``message``
file and the envelope recipients as ``to``: the bytes sent are the bytes
every other provider sends. Basic auth, user ``api``, password the API key.
References: https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages/post-v3--domain-name--messages-mime
(request) and https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses
(status codes); a success answers ``{"id": "<...>", "message": "Queued. Thank you."}``.

International addresses: Mailgun's HTTP API supports SMTPUTF8 (its
"Internationalization" guide: non-ASCII local parts for outgoing messages,
delivered where the receiving side supports SMTPUTF8). A message with a
non-ASCII address goes in its RFC 6532 form (UTF-8 headers as written);
envelope domains go as punycode A-labels, which every receiver accepts.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import urllib3

from mailroom.adapters.providers.base import FailureKind, ProviderError, ProviderReceipt
from mailroom.adapters.providers.https import HttpsProvider
from mailroom.domain.mime import OutgoingEmail


class MailgunProvider(HttpsProvider):
    name = "mailgun"

    def __init__(
        self,
        api_key: str | None,
        domain: str | None,
        *,
        base_url: str = "https://api.mailgun.net",
        timeout_seconds: float = 10.0,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        super().__init__(base_url, timeout_seconds=timeout_seconds, pool=pool)
        self._api_key = api_key
        self._domain = domain

    def send(self, email: OutgoingEmail) -> ProviderReceipt:
        if not self._api_key or not self._domain:
            raise ProviderError(
                self.name, FailureKind.CONFIG, "MAILGUN_API_KEY and MAILGUN_DOMAIN must be set"
            )
        response = self._post(
            f"/v3/{quote(self._domain, safe='')}/messages.mime",
            headers={
                **urllib3.make_headers(basic_auth=f"api:{self._api_key}"),
                "Accept": "application/json",
            },
            # One `to` per envelope recipient, Bcc included: Mailgun sends to
            # these, whatever the headers say.
            fields=[
                *(("to", recipient) for recipient in email.envelope_recipients),
                ("message", ("message.mime", email.mime_utf8 or email.mime, "message/rfc822")),
            ],
        )
        try:
            provider_id = str(json.loads(response.data)["id"]).strip("<>")
        except (ValueError, KeyError, TypeError):
            # Accepted all the same (2xx): never fail, and so resend, it.
            provider_id = email.message_id.strip("<>")
        return ProviderReceipt(provider=self.name, provider_msg_id=provider_id)

    def describe_error(self, body: bytes) -> str:
        # {"message": "..."} mostly; a bare "Forbidden" for a wrong key.
        try:
            return str(json.loads(body)["message"])
        except (ValueError, KeyError, TypeError):
            return super().describe_error(body)
