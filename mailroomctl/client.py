"""The admin API over HTTP, with the error shape turned into one exception."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class AdminApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class AdminClient:
    api_url: str
    admin_token: str
    timeout_seconds: float = 30.0

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """The decoded JSON answer of a 2xx; AdminApiError for anything else.

        ``body`` goes as JSON; ``raw`` as it is, declared as ``content_type``
        (a file to import).
        """
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own API
            self.api_url.rstrip("/") + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Accept": "application/json",
                **({"Content-Type": content_type} if data is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise _api_error(error.code, error.read()) from None
        except urllib.error.URLError as error:
            raise AdminApiError(0, "unreachable", f"{self.api_url}: {error.reason}", []) from None
        return json.loads(raw) if raw else None


def _api_error(status: int, raw: bytes) -> AdminApiError:
    try:
        error = json.loads(raw)["error"]
        return AdminApiError(status, error["code"], error["message"], error.get("details", []))
    except (ValueError, KeyError, TypeError):
        return AdminApiError(status, "http_error", raw.decode(errors="replace")[:500], [])
