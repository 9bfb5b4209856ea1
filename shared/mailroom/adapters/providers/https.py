"""What the HTTPS providers (SendGrid, Mailgun) share: a pooled client and one status table.

urllib3 is the client: botocore already depends on it, so it costs the layer
nothing new; its pool keeps TLS connections open across the messages of a
batch and across warm invocations; and it types its API. Its own retries
and redirects are off: the provider chain decides what a failure means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import urllib3
from urllib3.exceptions import HTTPError, LocationValueError, SSLError

from mailroom.adapters.providers.base import EmailProvider, FailureKind, ProviderError

# HTTP status -> failure kind, after the providers' API references (see each
# module). 429 and 5xx are transient; any other 4xx not listed is taken as
# "this request is wrong", i.e. permanent for the message.
KIND_BY_STATUS: Mapping[int, FailureKind] = {
    400: FailureKind.PERMANENT,
    401: FailureKind.CONFIG,  # the API key is wrong, revoked or out of credits
    403: FailureKind.CONFIG,  # sender not verified, key lacks permission
    404: FailureKind.CONFIG,  # wrong base URL or unknown sending domain
    408: FailureKind.TRANSIENT,
    413: FailureKind.PERMANENT,
    429: FailureKind.TRANSIENT,
}
ERROR_TEXT_LIMIT = 500


def kind_for_status(status: int, table: Mapping[int, FailureKind] = KIND_BY_STATUS) -> FailureKind:
    if status in table:
        return table[status]
    if status >= 500:
        return FailureKind.TRANSIENT
    if status >= 400:
        return FailureKind.PERMANENT
    # A redirect or other surprise: the base URL points somewhere wrong.
    return FailureKind.CONFIG


class HttpsProvider(EmailProvider):
    kind_by_status: ClassVar[Mapping[int, FailureKind]] = KIND_BY_STATUS

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = 10.0,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds)
        self._pool = pool or urllib3.PoolManager(num_pools=2, maxsize=2)

    def _post(
        self,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        fields: Sequence[tuple[str, Any]] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """The 2xx answer, or a classified ProviderError."""
        try:
            response = self._pool.request(
                "POST",
                self._base_url + path,
                headers=dict(headers),
                body=body,
                fields=fields,
                timeout=self._timeout,
                retries=False,
                redirect=False,
                preload_content=True,
            )
        except (SSLError, LocationValueError) as error:
            # A certificate we refuse or a base URL that is not one: ours to fix.
            raise ProviderError(self.name, FailureKind.CONFIG, f"{error}") from error
        except HTTPError as error:
            # Refused, reset, timed out, DNS: the provider may be back soon.
            raise ProviderError(
                self.name, FailureKind.TRANSIENT, f"request failed: {error}"
            ) from error
        if 200 <= response.status < 300:
            return response
        kind = kind_for_status(response.status, self.kind_by_status)
        detail = self.describe_error(response.data)[:ERROR_TEXT_LIMIT]
        raise ProviderError(self.name, kind, f"HTTP {response.status}: {detail}")

    def describe_error(self, body: bytes) -> str:
        """The provider's own words for a failure, from its error body."""
        return body.decode("utf-8", errors="replace").strip()

    def close(self) -> None:
        # The pool outlives the batch on purpose: a warm container reuses its
        # TLS connections. Nothing is held that must be released per batch.
        return None
