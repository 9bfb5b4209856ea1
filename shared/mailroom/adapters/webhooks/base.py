"""The flow every provider webhook follows: validate → parse → emit.

As in django-anymail, a provider module only says how to validate its
requests and how to read its events; the order is fixed here, so no provider
can parse (let alone apply) anything before its signature has been checked.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from mailroom.domain.errors import MalformedRequest, MalformedWebhook, UnsupportedValue
from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType, RejectReason
from mailroom.domain.strict_json import parse_json

# Every verification reads time through one of these, so tests pass a fixed one.
Clock = Callable[[], datetime]

Verified = TypeVar("Verified")
Summary = TypeVar("Summary")
Emit = Callable[[Sequence[DeliveryEvent]], Summary]

# Column sizes in delivery_events: longer values are refused as malformed
# rather than failing the insert (a 5xx the provider would retry forever).
MAX_ID_LENGTH = 255
MAX_HEADER_LENGTH = 998


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What a provider sent: the exact body bytes (signatures cover them) and headers."""

    body: bytes
    headers: Mapping[str, str]

    @classmethod
    def of(cls, body: bytes, headers: Mapping[str, str]) -> WebhookRequest:
        return cls(body=body, headers={key.lower(): value for key, value in headers.items()})

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return provider_json(self.body)


def provider_json(text: str | bytes) -> Any:
    """Strict JSON from a provider: MalformedWebhook (400, no retry) for what cannot be kept.

    A NUL or a lone surrogate in a field, a number out of range or absurd
    nesting would otherwise reach PostgreSQL and fail there as our error
    (a 5xx the provider retries for days).
    """
    try:
        return parse_json(text)
    except (MalformedRequest, UnsupportedValue) as error:
        raise MalformedWebhook(
            f"the body is not JSON Mailroom can accept: {error.message}", details=error.details
        ) from error


class ProviderWebhook(abc.ABC, Generic[Verified]):
    """One provider's callbacks. Subclasses implement the two steps, never the order."""

    provider: str

    def handle(self, request: WebhookRequest, emit: Emit[Summary]) -> Summary:
        verified = self.validate_request(request)
        try:
            return emit(self.parse_events(verified))
        except Exception:
            # Nothing was applied (emit commits once, at its end): let the
            # provider's retry through whatever validation remembered.
            self.forget(verified)
            raise

    @abc.abstractmethod
    def validate_request(self, request: WebhookRequest) -> Verified:
        """Raise a WebhookRejected unless the request provably comes from the provider."""

    @abc.abstractmethod
    def parse_events(self, verified: Verified) -> list[DeliveryEvent]:
        """The normalised events; MalformedWebhook if the payload is not the provider's shape."""

    def forget(self, verified: Verified) -> None:
        """Undo what validation remembered (a replay token) when processing failed."""


def text_field(value: Any, field: str, *, limit: int = MAX_ID_LENGTH) -> str | None:
    """An optional string field, refused as malformed if it has another type or is too long."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise MalformedWebhook(f"{field} must be a string")
    if len(value) > limit:
        raise MalformedWebhook(f"{field} is longer than {limit} characters")
    return value


def required_text(value: Any, field: str, *, limit: int = MAX_ID_LENGTH) -> str:
    text = text_field(value, field, limit=limit)
    if text is None:
        raise MalformedWebhook(f"{field} is missing")
    return text


def mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedWebhook(f"{field} must be an object")
    return value


def content_id(payload: Any) -> str:
    """A stable id for a payload that has none of its own: its canonical JSON, hashed."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def epoch_datetime(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError) as error:
        raise MalformedWebhook(f"{field} is not a Unix timestamp") from error


def iso_datetime(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedWebhook(f"{field} is not an ISO 8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise MalformedWebhook(f"{field} is not an ISO 8601 timestamp") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def make_event(
    provider: str,
    *,
    event_type: FeedbackEventType,
    event_id: str,
    timestamp: datetime | None,
    message_id: Any,
    recipient: Any,
    raw: dict[str, Any],
    reject_reason: RejectReason | None = None,
    mta_response: Any = None,
    description: Any = None,
    message_id_header: Any = None,
) -> DeliveryEvent:
    """A DeliveryEvent whose every field fits its column."""
    return DeliveryEvent(
        provider=provider,
        event_type=event_type,
        event_id=required_text(event_id, "event id"),
        timestamp=timestamp,
        message_id=_bare_message_id(text_field(message_id, "message id")),
        recipient=text_field(recipient, "recipient", limit=MAX_HEADER_LENGTH),
        reject_reason=reject_reason,
        mta_response=text_field(mta_response, "response", limit=10_000),
        description=text_field(description, "description", limit=10_000),
        message_id_header=text_field(message_id_header, "Message-ID", limit=MAX_HEADER_LENGTH),
        raw=raw,
    )


def _bare_message_id(value: str | None) -> str | None:
    return value.strip().strip("<>") or None if value else None
