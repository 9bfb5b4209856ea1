"""The door of the client API: every /v1/ request is authenticated and rate-limited first.

``MailroomApi.resolve`` runs the gate before the body is even parsed, so an
unauthenticated caller learns nothing about its body and every request a
client makes counts against its bucket. Route handlers then ask
``admitted_caller`` for the caller, naming the scope the route needs; if no
gate ran (an app built without one), the same checks run there instead, so a
client route can never be reached unauthenticated, unlimited or out of
scope. Whatever the outcome, the response carries the client's X-RateLimit
headers once its bucket has been consulted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from mailroom.bootstrap import Services
from mailroom.domain.api_keys import decode_token
from mailroom.domain.errors import (
    DependencyUnavailable,
    InsufficientScope,
    InvalidToken,
    IpNotAllowed,
    MailroomError,
)
from mailroom.domain.tenancy import Caller, Scope
from mailroom.entrypoints.observability import logger
from mailroom.services.admission import Admission, admit

ServicesProvider = Callable[[], Services]

CLIENT_API_PREFIX = "/v1/"


@dataclass
class Invocation:
    """What the gate learnt during one invocation of the resolver."""

    admission: Admission | None = None

    def decorate(self, response: dict[str, Any]) -> dict[str, Any]:
        """Add the client's rate-limit headers to a proxy response, if a bucket was consulted."""
        if self.admission is not None:
            add_headers(response, self.admission.rate.headers)
        return response


_current: ContextVar[Invocation | None] = ContextVar("mailroom_client_invocation", default=None)


@contextmanager
def invocation() -> Iterator[Invocation]:
    """One resolver invocation's gate state; nothing carries over to the next one."""
    state = Invocation()
    token = _current.set(state)
    try:
        yield state
    finally:
        _current.reset(token)


@dataclass(frozen=True, slots=True)
class Presented:
    """The credentials a request carries, and where it came from."""

    api_key: str | None
    api_secret: str | None
    source_ip: str | None


def presented(headers: Mapping[str, str], source_ip: str | None) -> Presented:
    """Read either form of credentials: X-Api-Key + X-Api-Secret, or a Bearer token.

    ``headers`` must answer lower-case names (the gate lowercases; Powertools'
    map is case-insensitive). A Bearer token that is not ours or fails its
    checksum is refused here, before any Redis, database or argon2 work.
    """
    api_key = headers.get("x-api-key")
    api_secret = headers.get("x-api-secret")
    authorization = headers.get("authorization")
    if authorization and not (api_key or api_secret):
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("send 'Authorization: Bearer <token>'")
        decoded = decode_token(token.strip())
        if decoded is None:
            raise InvalidToken("the Bearer token is malformed or fails its checksum")
        api_key, api_secret = decoded
    return Presented(api_key, api_secret, source_ip)


def source_ip_of(event: Mapping[str, Any]) -> str | None:
    """API Gateway's view of the caller's address; never X-Forwarded-For, which anyone can write."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    source = identity.get("sourceIp")
    return str(source) if source else None


class ClientGate:
    """Runs the client checks ahead of Powertools' routing and body validation."""

    def __init__(self, services: ServicesProvider) -> None:
        self._services = services

    def applies_to(self, event: Mapping[str, Any]) -> bool:
        return str(event.get("path") or "").startswith(CLIENT_API_PREFIX)

    def check(self, event: Mapping[str, Any]) -> None:
        """Raise the MailroomError the request must be answered with, if any."""
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        try:
            admitted(self._services(), lambda: presented(headers, source_ip_of(event)))
        except MailroomError:
            raise
        # Outside the resolver, Powertools' exception handlers do not apply:
        # map what they would have mapped.
        except (OperationalError, InterfaceError) as error:
            logger.exception("a dependency failed")
            raise DependencyUnavailable("a backing service is unavailable, try again") from error
        except Exception as error:
            logger.exception("unhandled error")
            raise MailroomError("an unexpected error occurred") from error


def admitted_caller(
    services: Services, credentials: Callable[[], Presented], scope: Scope
) -> Caller:
    """Who this invocation is for: admitted once (authenticated, rate-limited), with ``scope``.

    A scope refusal is audited (at most one row per key and minute per
    instance: services/api_keys.RefusalAudit).
    """
    admission = admitted(services, credentials)
    caller = admission.caller
    if not caller.allows(scope):
        services.refusal_audit.record(
            caller.key_id,
            "insufficient_scope",
            {"required_scope": scope.value},
            admission.source_ip,
        )
        raise InsufficientScope(scope.value)
    return caller


def admitted(services: Services, credentials: Callable[[], Presented]) -> Admission:
    """Authenticate and rate-limit once per invocation; the gate and the routes share the result.

    ``credentials`` is read only when no gate ran yet in this invocation.
    """
    state = _current.get()
    admission = state.admission if state is not None else None
    if admission is None:
        presented_now = credentials()
        try:
            admission = admit(
                services.authenticator,
                services.rate_limiter,
                api_key=presented_now.api_key,
                api_secret=presented_now.api_secret,
                source_ip=presented_now.source_ip,
                global_per_minute=services.settings.global_rate_limit_per_minute,
            )
        except IpNotAllowed as error:
            services.refusal_audit.record(
                str(error.details[0]["key_id"]),
                "ip_not_allowed",
                {},
                presented_now.source_ip,
            )
            raise
        if state is not None:
            state.admission = admission
        logger.append_keys(client_id=str(admission.client.id), key_id=admission.caller.key_id)
    admission.refuse_if_limited()
    return admission


def add_headers(response: dict[str, Any], headers: Mapping[str, str]) -> None:
    """Set headers on an API Gateway proxy response, in whichever map it uses."""
    if "multiValueHeaders" in response or "headers" not in response:
        multi = response.setdefault("multiValueHeaders", {}) or {}
        response["multiValueHeaders"] = multi
        for name, value in headers.items():
            multi[name] = [value]
    else:
        single = response["headers"] or {}
        response["headers"] = single
        single.update(headers)
