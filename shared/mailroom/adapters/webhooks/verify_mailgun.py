"""Mailgun webhook signatures: HMAC-SHA256 of timestamp + token with the signing key.

Mailgun puts ``{"timestamp", "token", "signature"}`` in the body's ``signature``
object. After the HMAC matches (compared in constant time), the timestamp must
be within the window and the token unused: it is claimed in Redis with SET NX
for twice the window (a token outside the window is refused as stale anyway,
and the window reaches both ways to allow for clock skew).

Reference: https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mailroom.adapters.webhooks.base import Clock
from mailroom.adapters.webhooks.replay import ReplayGuard
from mailroom.domain.errors import InvalidSignature, ReplayedWebhook, StaleWebhook

TOKEN_KEY_PREFIX = "mailgun:"  # noqa: S105 - a Redis key prefix, not a secret


class MailgunSignatureVerifier:
    def __init__(
        self,
        signing_key: str,
        replay_guard: ReplayGuard,
        *,
        clock: Clock,
        max_age: timedelta,
    ) -> None:
        self._key = signing_key.encode()
        self._replay_guard = replay_guard
        self._clock = clock
        self._max_age = max_age

    def verify(self, block: Mapping[str, Any]) -> str:
        """Check the body's ``signature`` object; the replay key now claimed for its token."""
        timestamp, token, signature = (block.get(k) for k in ("timestamp", "token", "signature"))
        if not (
            isinstance(timestamp, str | int)
            and isinstance(token, str)
            and isinstance(signature, str)
            and token
        ):
            raise InvalidSignature("the Mailgun signature object is incomplete")
        expected = hmac.new(self._key, f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise InvalidSignature("the Mailgun signature does not verify")
        try:
            signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
        except (ValueError, OverflowError, OSError) as error:
            raise InvalidSignature("the Mailgun timestamp is not a Unix time") from error
        if abs(self._clock() - signed_at) > self._max_age:
            raise StaleWebhook("the Mailgun timestamp is outside the accepted window")
        replay_key = TOKEN_KEY_PREFIX + token
        ttl = int(self._max_age.total_seconds()) * 2
        if not self._replay_guard.claim(replay_key, ttl):
            raise ReplayedWebhook("this Mailgun token was already used")
        return replay_key

    def release(self, replay_key: str) -> None:
        self._replay_guard.release(replay_key)
