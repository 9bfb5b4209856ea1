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
from mailroom.domain.errors import DependencyUnavailable, InsufficientScope, MailroomError
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
            admitted(self._services(), headers.get("x-api-key"), headers.get("x-api-secret"))
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
    services: Services, api_key: str | None, api_secret: str | None, scope: Scope
) -> Caller:
    """Who this invocation is for: admitted once (authenticated, rate-limited), with ``scope``."""
    caller = admitted(services, api_key, api_secret).caller
    if not caller.allows(scope):
        raise InsufficientScope(scope.value)
    return caller


def admitted(services: Services, api_key: str | None, api_secret: str | None) -> Admission:
    """Authenticate and rate-limit once per invocation; the gate and the routes share the result."""
    state = _current.get()
    admission = state.admission if state is not None else None
    if admission is None:
        admission = admit(
            services.authenticator,
            services.rate_limiter,
            api_key=api_key,
            api_secret=api_secret,
            global_per_minute=services.settings.global_rate_limit_per_minute,
        )
        if state is not None:
            state.admission = admission
        logger.append_keys(client_id=str(admission.client.id))
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
