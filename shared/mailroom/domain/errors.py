"""One exception hierarchy for Mailroom.

Every error carries a stable machine-readable ``code``; the HTTP entrypoint maps
error classes to status codes in one table, never by matching message text.
"""

from __future__ import annotations

from typing import Any


class MailroomError(Exception):
    """Base of every error Mailroom raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidRequest(MailroomError):
    """The request is well-formed JSON but its content is not acceptable."""

    code = "validation_error"


class MalformedRequest(MailroomError):
    """The body could not be parsed at all."""

    code = "malformed_json"


class PayloadTooLarge(MailroomError):
    code = "payload_too_large"


class UnsupportedMediaType(MailroomError):
    """The body is declared as something other than JSON."""

    code = "unsupported_media_type"


class HeaderInjection(InvalidRequest):
    """A value destined for a mail header holds CR or LF."""

    code = "header_injection"


class UnknownTemplate(InvalidRequest):
    code = "unknown_template"


class Unauthenticated(MailroomError):
    """Missing or wrong credentials. One error for both, so keys cannot be probed."""

    code = "unauthorized"


class ClientSuspended(MailroomError):
    code = "client_suspended"


class MessageNotFound(MailroomError):
    code = "message_not_found"


class DependencyUnavailable(MailroomError):
    """A system we depend on (database, Redis, queue) did not answer."""

    code = "service_unavailable"


class EnqueueFailed(DependencyUnavailable):
    """The message row was written but the queue refused it; the row is marked failed."""

    code = "enqueue_failed"


class RenderError(MailroomError):
    """A template could not be rendered with the given props."""

    code = "render_error"
