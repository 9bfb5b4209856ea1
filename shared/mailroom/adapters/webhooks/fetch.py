"""GETting the few AWS URLs the SNS verifier allows: certificates and subscription links.

Kept apart from the verifier so that wiring it (bootstrap) does not import the
cryptography package into every function's cold start.
"""

from __future__ import annotations

import abc
import ssl
import urllib.error
import urllib.request
from typing import Any

from mailroom.domain.errors import DependencyUnavailable, MalformedWebhook, UntrustedCertificateUrl

# A PEM certificate is about 2 KB; anything much larger is not one.
MAX_FETCH_BYTES = 64 * 1024


class AwsHttpsFetcher(abc.ABC):
    """GETs an SNS URL that the verifier has already checked; tests serve their own files."""

    @abc.abstractmethod
    def fetch(self, url: str) -> bytes:
        """The response body; raise DependencyUnavailable if the host cannot be reached."""


class UrllibAwsFetcher(AwsHttpsFetcher):
    """urllib with certificate verification, no redirects, a short timeout and a size cap."""

    def __init__(self, *, timeout_seconds: float = 5.0) -> None:
        self._timeout = timeout_seconds
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ssl.create_default_context()),
            _NoRedirects(),
        )

    def fetch(self, url: str) -> bytes:
        if not url.startswith("https://"):
            raise UntrustedCertificateUrl("only https URLs are fetched")
        try:
            with self._opener.open(url, timeout=self._timeout) as response:
                body: bytes = response.read(MAX_FETCH_BYTES + 1)
        except (urllib.error.URLError, OSError) as error:
            raise DependencyUnavailable(f"could not fetch {url}: {error}") from error
        if len(body) > MAX_FETCH_BYTES:
            raise MalformedWebhook("the SNS certificate response is too large")
        return body


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would leave the checked host; refuse it instead of following."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
