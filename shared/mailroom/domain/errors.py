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


class TemplateNotFound(MailroomError):
    """A template route's path names no template this client may use (issue 15).

    Another client's template answers exactly like a name that exists nowhere.
    """

    code = "template_not_found"


class Unauthenticated(MailroomError):
    """Missing or wrong credentials. One error for both, so keys cannot be probed."""

    code = "unauthorized"


class ClientSuspended(MailroomError):
    code = "client_suspended"


class SendingPaused(MailroomError):
    """Reputation paused the client's sending (issue 21); an operator lifts it."""

    code = "sending_paused"


class ClientNotFound(MailroomError):
    code = "client_not_found"


class TooManyRequests(MailroomError):
    """Refused for now; the caller may try again after ``retry_after_seconds``."""

    code = "too_many_requests"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: int,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after_seconds = retry_after_seconds


class RateLimited(TooManyRequests):
    code = "rate_limited"


class QuotaExceeded(TooManyRequests):
    code = "quota_exceeded"


class MessageNotFound(MailroomError):
    code = "message_not_found"


class UnsubscribeLinkNotFound(MailroomError):
    """A /u/{token} whose HMAC does not verify, or whose message is gone: nothing is written."""

    code = "unsubscribe_link_not_found"


class TrackingLinkNotFound(MailroomError):
    """A /c/{token} that no tracked link has (unknown, altered, or a pixel's): nothing recorded."""

    code = "tracking_link_not_found"


class InboundMailNotFound(MailroomError):
    code = "inbound_mail_not_found"


class HeaderNotAllowed(InvalidRequest):
    """A caller header Mailroom writes itself (From, DKIM-Signature...) or one not allowlisted."""

    code = "header_not_allowed"


class BulkNeedsOneRecipient(InvalidRequest):
    """A bulk send's unsubscribe link must name one person: one recipient, no cc/bcc."""

    code = "bulk_single_recipient"


class MessageNotRetryable(MailroomError):
    """Only a failed message can be sent again (issue 17)."""

    code = "message_not_retryable"


class DependencyUnavailable(MailroomError):
    """A system we depend on (database, Redis, queue) did not answer."""

    code = "service_unavailable"


class ChangeNotPropagated(DependencyUnavailable):
    """An admin change was saved but Redis could not be told; retrying propagates it."""

    code = "change_not_propagated"


class IdempotencyKeyReused(InvalidRequest):
    """An Idempotency-Key already used, within its 24 hours, for a different request."""

    code = "idempotency_key_reused"


class IdempotencyInProgress(MailroomError):
    """Another request with the same Idempotency-Key is still being handled."""

    code = "idempotency_in_progress"


class EnqueueFailed(DependencyUnavailable):
    """The message row was written but the queue refused it; the row is marked failed."""

    code = "enqueue_failed"


class DeadLetterQueueUnavailable(DependencyUnavailable):
    """The dead-letter queue is not configured or did not answer."""

    code = "dead_letter_queue_unavailable"


class DeadLetterNotFound(MessageNotFound):
    """No record for that message is in the dead-letter queue."""

    code = "dead_letter_not_found"


class ConfirmationRequired(InvalidRequest):
    """A destructive admin action without the confirmation it asks for."""

    code = "confirmation_required"


class RenderError(MailroomError):
    """A template could not be rendered with the given props."""

    code = "render_error"


class RenderTimeout(RenderError):
    """The render ran past its time limit and was stopped."""

    code = "render_timeout"


class RenderTooLarge(RenderError):
    """The render would have produced more than its byte budget."""

    code = "render_too_large"


class SubjectTooLong(RenderError):
    """The rendered subject is over 998 octets once encoded: one header line's limit."""

    code = "subject_too_long"


class TemplateSecurityError(RenderError):
    """Template code reached for Python internals; refused at upload or at render."""

    code = "template_security_error"


class MissingProp(RenderError):
    """The template uses a prop the request did not give (StrictUndefined)."""

    code = "missing_prop"


class InvalidProps(InvalidRequest):
    """The props do not match the template's schema.json."""

    code = "invalid_props"


class InvalidTemplate(InvalidRequest):
    """An uploaded template does not compile; details carry part and line."""

    code = "template_syntax_error"


class TemplateReadOnly(MailroomError):
    """A file template cannot be replaced through the API."""

    code = "template_read_only"


class RecipientsSuppressed(MailroomError):
    """Every addressee of the message is on the suppression list; the row reads failed."""

    code = "suppressed"


class SuppressionNotFound(MailroomError):
    code = "suppression_not_found"


class WebhookRejected(MailroomError):
    """A provider callback we refuse (4xx): the provider should not retry it."""

    code = "webhook_rejected"


class MalformedWebhook(WebhookRejected):
    """The callback body or its envelope is not what the provider sends."""

    code = "malformed_payload"


class InvalidSignature(WebhookRejected):
    """The signature is missing or does not verify; nothing was applied."""

    code = "invalid_signature"


class StaleWebhook(WebhookRejected):
    """The signed timestamp is outside the accepted window (a replay or a wrong clock)."""

    code = "stale_timestamp"


class ReplayedWebhook(WebhookRejected):
    """The signed token was already used within the window."""

    code = "replayed_token"


class TopicNotAllowed(WebhookRejected):
    """An SNS message from a topic that is not on the allowlist."""

    code = "topic_not_allowed"


class UntrustedCertificateUrl(WebhookRejected):
    """An SNS SigningCertURL or SubscribeURL outside https://sns.<region>.amazonaws.com/."""

    code = "untrusted_certificate_url"


class UnknownWebhookProvider(MailroomError):
    code = "unknown_provider"


class WebhookNotConfigured(MailroomError):
    """Our side lacks the key or allowlist to verify this provider: 5xx, so it retries."""

    code = "webhook_not_configured"


class UnsupportedValue(InvalidRequest):
    """Well-formed JSON holding a value Mailroom cannot store or use faithfully.

    A NUL character or a lone surrogate in a string (PostgreSQL text and
    UTF-8 hold neither), a number outside what a float or an int can carry
    (``1e400``, more than 4,300 digits), nesting deeper than the documented
    limit. The details name the field and say which.
    """

    code = "unsupported_value"


class MethodNotAllowed(MailroomError):
    """The path exists but not with this method; ``allowed`` goes in the Allow header."""

    code = "method_not_allowed"

    def __init__(self, message: str, *, allowed: list[str]) -> None:
        super().__init__(message, details=[{"allowed": allowed}])
        self.allowed = allowed


class ClientNameTaken(MailroomError):
    """Another client already has this name (compared case-insensitively)."""

    code = "client_name_taken"


class InsufficientScope(MailroomError):
    """The key is valid but may not do this; the details name the scope it lacks."""

    code = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this key lacks the scope {scope!r}", details=[{"required_scope": scope}])
        self.scope = scope


class SuppressionIsGlobal(MailroomError):
    """A client asked to lift an entry that only the global list holds: an operator's to lift."""

    code = "suppression_global"


class UnreadableBody(MalformedRequest):
    """A text body (CSV, JSON lines) that does not decode in its charset."""

    code = "malformed_body"


# -- API keys (issue 15) ----------------------------------------------------------


class InvalidToken(Unauthenticated):
    """A Bearer token that is not one of ours or fails its checksum: refused before any lookup."""

    code = "invalid_token"


class ApiKeyExpired(Unauthenticated):
    """The key and secret match, but the key's expires_at has passed."""

    code = "api_key_expired"


class ApiKeyRevoked(Unauthenticated):
    """The key and secret match, but the key was revoked."""

    code = "api_key_revoked"


class IpNotAllowed(MailroomError):
    """The caller's address (API Gateway's sourceIp) is outside the key's allowlist."""

    code = "ip_not_allowed"


class UnknownScope(InvalidRequest):
    code = "unknown_scope"


class InvalidCidr(InvalidRequest):
    code = "invalid_cidr"


class ApiKeyNotFound(MailroomError):
    """No such key for this client (another client's key reads the same)."""

    code = "api_key_not_found"


class KeyLimitReached(MailroomError):
    """The client already has the documented maximum of active keys."""

    code = "key_limit_reached"


class DailyLimitExceeded(QuotaExceeded):
    """The client's daily limit (UTC day) is used up."""

    code = "daily_limit_exceeded"


class InvalidDomain(InvalidRequest):
    """Not a domain name a client could send as (issue 16)."""

    code = "invalid_domain"


class DomainTaken(MailroomError):
    """Registered already: by this client (it is listed), or by another (never said which)."""

    code = "domain_taken"


class DomainNotFound(MailroomError):
    code = "domain_not_found"


class SenderNotVerified(InvalidRequest):
    """The From domain is not a verified sending domain of this client."""

    code = "sender_not_verified"


# --- outbound webhooks (issue 19) ---------------------------------------------


class UnknownEventType(InvalidRequest):
    code = "unknown_event_type"


class UnsafeWebhookUrl(InvalidRequest):
    """The URL is not one Mailroom will call (scheme, credentials, address)."""

    code = "invalid_webhook_url"


class BlockedAddress(UnsafeWebhookUrl):
    """The URL's host is (or resolves to) a private, loopback or link-local address."""

    code = "webhook_address_blocked"


class WebhookEndpointNotFound(MailroomError):
    """Another client's endpoint answers exactly like one that does not exist."""

    code = "webhook_not_found"


class WebhookDeliveryNotFound(MailroomError):
    code = "webhook_delivery_not_found"


class WebhookLimitReached(MailroomError):
    code = "webhook_limit_reached"


class SecretsNotConfigured(DependencyUnavailable):
    """SECRETS_ENCRYPTION_KEYS is unset: secrets Mailroom must read back cannot be stored."""

    code = "secrets_not_configured"


# --- bulk batches (issue 17) ---------------------------------------------------


class BatchNotFound(MailroomError):
    code = "batch_not_found"


class BatchConflict(MailroomError):
    """The batch's state does not allow this: start twice, cancel after it finished..."""

    code = "batch_state_conflict"


class UploadMissing(BatchConflict):
    """Start was called before the recipients file was uploaded."""

    code = "upload_missing"


class UploadTooLarge(PayloadTooLarge):
    code = "upload_too_large"


class NoEmailColumn(InvalidRequest):
    """A CSV whose header names no email column: none of its recipients can be read."""

    code = "no_email_column"


class NotScheduled(MailroomError):
    """Cancel or reschedule of a message whose sending has begun (or that was never scheduled)."""

    code = "not_scheduled"


class ScheduleNotFound(MailroomError):
    code = "schedule_not_found"


class SchedulePaused(MailroomError):
    """Run now on a paused schedule: resume it first."""

    code = "schedule_paused"


class ScheduleFinished(MailroomError):
    """The schedule's ``ends_at`` has passed: nothing fires again."""

    code = "schedule_finished"


# -- SMTP configurations (issue 20) ------------------------------------------------


class SmtpConfigNotFound(MailroomError):
    """No such SMTP configuration for this client (another client's reads the same)."""

    code = "smtp_config_not_found"


class SmtpConfigNameTaken(MailroomError):
    """The client already has an SMTP configuration of this name."""

    code = "smtp_config_name_taken"


class UnknownSmtpConfig(InvalidRequest):
    """A send names an SMTP configuration the client does not have (or an inactive one)."""

    code = "unknown_smtp_config"


# Issue 20: per-client queues.
class UnknownQueue(InvalidRequest):
    """A send names a queue the client does not have."""

    code = "unknown_queue"


class QueueDraining(MailroomError):
    """The queue is draining: what it holds is sent, new mail is refused."""

    code = "queue_draining"


class QueueNameTaken(MailroomError):
    code = "queue_name_taken"


class QueueNotFound(MailroomError):
    code = "queue_not_found"


class QueueNotEmpty(MailroomError):
    """A queue still holding unsent mail is deleted only with ``?drain=true``."""

    code = "queue_not_empty"
