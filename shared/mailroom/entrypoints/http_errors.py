"""Errors as HTTP answers: the one table from error class to status code.

Every failure answers ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from mailroom.domain import errors
from mailroom.entrypoints.observability import logger

STATUS_BY_ERROR: dict[type[errors.MailroomError], int] = {
    errors.MalformedRequest: 400,
    errors.Unauthenticated: 401,
    errors.ClientSuspended: 403,
    errors.SendingPaused: 403,
    errors.InsufficientScope: 403,
    errors.MessageNotFound: 404,
    errors.UnsubscribeLinkNotFound: 404,
    errors.TrackingLinkNotFound: 404,
    errors.InboundMailNotFound: 404,
    errors.MessageNotRetryable: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.InvalidRequest: 422,
    # A template that cannot render these props (at send time or in a preview).
    errors.RenderError: 422,
    errors.TemplateReadOnly: 409,
    errors.IdempotencyInProgress: 409,
    errors.DependencyUnavailable: 503,
    errors.RecipientsSuppressed: 422,
    errors.SuppressionNotFound: 404,
    # Provider callbacks: 4xx when we refuse them (the provider stops),
    # 5xx when we failed (the provider retries).
    errors.MalformedWebhook: 400,
    errors.InvalidSignature: 401,
    errors.StaleWebhook: 401,
    errors.ReplayedWebhook: 401,
    errors.TopicNotAllowed: 403,
    errors.UntrustedCertificateUrl: 403,
    errors.UnknownWebhookProvider: 404,
    errors.WebhookNotConfigured: 503,
    errors.ClientNotFound: 404,
    # rate_limited and quota_exceeded; both carry Retry-After.
    errors.TooManyRequests: 429,
    # The path exists, the method does not; the answer carries Allow.
    errors.MethodNotAllowed: 405,
    errors.ClientNameTaken: 409,
    errors.TemplateNotFound: 404,
    errors.SuppressionIsGlobal: 409,
    errors.IpNotAllowed: 403,
    errors.ApiKeyNotFound: 404,
    errors.KeyLimitReached: 409,
    errors.DomainTaken: 409,
    errors.DomainNotFound: 404,
    errors.WebhookEndpointNotFound: 404,
    errors.WebhookDeliveryNotFound: 404,
    errors.WebhookLimitReached: 409,
    errors.BatchNotFound: 404,
    errors.BatchConflict: 409,
    errors.NotScheduled: 409,
    errors.ScheduleNotFound: 404,
    errors.SchedulePaused: 409,
    errors.ScheduleFinished: 409,
    errors.SmtpConfigNotFound: 404,
    errors.SmtpConfigNameTaken: 409,
    # Issue 20: queues.
    errors.QueueDraining: 409,
    errors.QueueNameTaken: 409,
    errors.QueueNotFound: 404,
    errors.QueueNotEmpty: 409,
}

# Pydantic error types we raise ourselves that deserve their own code.
_OWN_VALIDATION_CODES = {errors.HeaderInjection.code, errors.HeaderNotAllowed.code}


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": {"code": code, "message": message, "details": details or []}}),
    )


def proxy_error_response(error: errors.MailroomError) -> dict[str, Any]:
    """The same answer as ``error_response``, as the API Gateway proxy dict."""
    body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    headers = {"Content-Type": content_types.APPLICATION_JSON, **error_headers(error)}
    return {
        "statusCode": status_for(error),
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def error_headers(error: errors.MailroomError) -> dict[str, str]:
    """Headers an error's answer carries besides the body."""
    if isinstance(error, errors.TooManyRequests):
        return {"Retry-After": str(error.retry_after_seconds)}
    if isinstance(error, errors.MethodNotAllowed):
        return {"Allow": ", ".join(error.allowed)}
    return {}


def status_for(error: errors.MailroomError) -> int:
    for error_class in type(error).__mro__:
        if error_class in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[error_class]
    return 500


def mailroom_error_response(error: errors.MailroomError) -> Response[str]:
    status = status_for(error)
    log = logger.warning if status < 500 else logger.error
    log("request refused", extra={"code": error.code, "status": status})
    response = error_response(status, error.code, error.message, error.details)
    response.headers.update(error_headers(error))
    return response


def install_error_handlers(app: APIGatewayRestResolver) -> None:
    app.exception_handler(errors.MailroomError)(mailroom_error_response)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(error: RequestValidationError) -> Response[str]:
        problems = list(error.errors())
        if any(problem.get("type") == "json_invalid" for problem in problems):
            return error_response(400, "malformed_json", "the request body is not valid JSON")
        details = [_detail(problem) for problem in problems]
        own = [d["type"] for d in details if d["type"] in _OWN_VALIDATION_CODES]
        code = own[0] if own else errors.InvalidRequest.code
        first = details[0] if details else {"field": "body", "message": "invalid"}
        message = f"{first['field']}: {first['message']}"
        return error_response(422, code, message, details)

    # Only "could not reach it" errors are 503; pg8000 reports a refused or
    # dropped connection as InterfaceError. Anything else is our bug: 500.
    @app.exception_handler(
        [OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError]
    )
    def _dependency_down(error: Exception) -> Response[str]:
        return _outage_response()

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response[str]:
        if is_connection_loss(error):
            return _outage_response()
        # Our own bug: say so without leaking internals; the log has the trace.
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred")

    @app.not_found
    def _no_route(error: Exception) -> Response[str]:
        event = app.current_event
        allowed = allowed_methods(app, event.path)
        if allowed:
            return mailroom_error_response(
                method_not_allowed(event.http_method, event.path, allowed)
            )
        return error_response(
            404, "route_not_found", f"no route for {event.http_method} {event.path}"
        )


def routes_of(app: APIGatewayRestResolver) -> list[Any]:
    """The resolver's routes. Powertools keeps them private and offers no public list;
    tests/unit/test_input_battery.py fails if these attributes go away."""
    return [*app._static_routes, *app._dynamic_routes]


def allowed_methods(app: APIGatewayRestResolver, path: str) -> list[str]:
    """The methods some route takes on ``path``, sorted; empty if no route has the path."""
    return sorted({route.method for route in routes_of(app) if route.rule.match(path)})


def method_not_allowed(method: str, path: str, allowed: list[str]) -> errors.MethodNotAllowed:
    return errors.MethodNotAllowed(
        f"{path} does not take {method}; it takes {', '.join(allowed)}", allowed=allowed
    )


def _outage_response() -> Response[str]:
    logger.exception("a dependency failed")
    return error_response(
        503, errors.DependencyUnavailable.code, "a backing service is unavailable, try again"
    )


def is_connection_loss(error: BaseException) -> bool:
    """A connection dropped mid-request (database restarting, network cut).

    pg8000 surfaces a connection lost during a statement in several shapes: a
    DBAPIError that SQLAlchemy marks ``connection_invalidated``, a bare socket
    error, or a wrapped one. These are outages (503, the caller retries), not
    bugs (500).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and (
            current.connection_invalidated or _sqlstate(current.orig)[:2] in _OUTAGE_CLASSES
        ):
            return True
        if isinstance(current, (OSError, DisconnectionError, RedisConnectionError)):
            return True
        current = current.__cause__ or current.__context__
    return False


# SQLSTATE classes of a server going away or not taking connections yet:
# 08 connection exception, 57 operator intervention (57P01 admin shutdown,
# 57P03 "the database system is starting up / shutting down"), seen while
# PostgreSQL restarts (the chaos run's one 500 before this, issue 7).
_OUTAGE_CLASSES = frozenset({"08", "57"})


def _sqlstate(error: BaseException | None) -> str:
    # pg8000 puts the server's error fields in a dict as the first argument;
    # "C" is the SQLSTATE code.
    fields = error.args[0] if error is not None and error.args else None
    code = fields.get("C") if isinstance(fields, dict) else None
    return code if isinstance(code, str) else ""


def _detail(problem: dict[str, Any]) -> dict[str, Any]:
    # Powertools prefixes locations with "body"; callers know their own fields.
    location = [str(part) for part in problem.get("loc", ()) if part != "body"]
    return {
        "field": ".".join(location) or "body",
        "type": problem.get("type", "value_error"),
        "message": problem.get("msg", "invalid value"),
    }
