"""Operator routes under /admin, behind one bearer token.

Each capability adds its own router here (templates, DLQ, clients...), so the
admin function and the OpenAPI document list them in one place.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.api_gateway import Router

from mailroom.bootstrap import Services
from mailroom.domain.errors import Unauthenticated
from mailroom.domain.tenancy import Actor
from mailroom.entrypoints.admin_clients import client_routes
from mailroom.entrypoints.admin_inbound import inbound_routes
from mailroom.entrypoints.admin_suppressions import suppression_routes
from mailroom.entrypoints.admin_templates import template_routes
from mailroom.entrypoints.analytics import admin_analytics_routes
from mailroom.entrypoints.api_keys import admin_key_routes
from mailroom.entrypoints.client_webhooks import admin_webhook_routes
from mailroom.entrypoints.dead_letters import dead_letter_routes
from mailroom.entrypoints.domains import admin_domain_routes
from mailroom.entrypoints.health import component_health_routes
from mailroom.entrypoints.openapi_contract import ADMIN_TOKEN, answers
from mailroom.entrypoints.smtp_configs import admin_smtp_config_routes

ServicesProvider = Callable[[], Services]
# For OpenAPI: admin routes use the bearer token, not the client key pair.
ADMIN_SECURITY = ADMIN_TOKEN


def require_admin(router: Router | APIGatewayRestResolver, services: Services) -> Actor:
    """Who is asking, if the request carries ``Authorization: Bearer <admin token>``.

    The actor goes into the audit row of every change the request makes.
    """
    check_admin_token(router.current_event.headers or {}, services)
    return admin_actor(router, services)


def check_admin_token(headers: Mapping[str, str], services: Services) -> None:
    """Unauthenticated unless ``headers`` carry the configured admin token as a Bearer."""
    expected = services.settings.admin_token_sha256
    authorization = next((str(v) for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = authorization.partition(" ")
    presented = hashlib.sha256(token.strip().encode()).hexdigest()
    # compare_digest even when nothing is configured, so timing says nothing.
    matches = hmac.compare_digest(presented, expected or "0" * 64)
    if not (expected and scheme.lower() == "bearer" and token and matches):
        raise Unauthenticated("admin routes need 'Authorization: Bearer <admin token>'")


class AdminGate:
    """The admin token, checked before Powertools validates a body or parameters.

    Without it a caller with no token learnt which fields an admin route
    takes from its 422s; now every /admin route but the health probe answers
    401 first, whatever was sent. Routes still call ``require_admin`` (for
    the actor, and so that an app built without the gate stays closed).
    """

    PUBLIC_PATHS = frozenset({"/admin/health"})

    def __init__(self, services: ServicesProvider) -> None:
        self._services = services

    def applies_to(self, event: Mapping[str, Any]) -> bool:
        path = str(event.get("path") or "")
        return path.startswith("/admin/") and path not in self.PUBLIC_PATHS

    def check(self, event: Mapping[str, Any]) -> None:
        check_admin_token(event.get("headers") or {}, self._services())


def admin_actor(router: Router | APIGatewayRestResolver, services: Services) -> Actor:
    """The admin token's fingerprint (it is the only admin identity) and the caller's IP."""
    token_hash = services.settings.admin_token_sha256 or ""
    identity = (router.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    source_ip = identity.get("sourceIp")
    return Actor(name=f"admin:{token_hash[:12]}", source_ip=str(source_ip) if source_ip else None)


def admin_routes(services: ServicesProvider) -> list[Router]:
    """Every router the admin function serves."""
    return [
        # Operators look here first, so it reports the backlog as /health does.
        component_health_routes("/admin/health", services, with_backlog=True),
        _whoami_routes(services),
        suppression_routes(services),
        dead_letter_routes(services),
        client_routes(services),
        template_routes(services),
        admin_key_routes(services),
        inbound_routes(services),
        admin_domain_routes(services),
        admin_webhook_routes(services),
        admin_smtp_config_routes(services),
        admin_analytics_routes(services),
    ]


def _whoami_routes(services: ServicesProvider) -> Router:
    router = Router()

    @router.get(
        "/admin/whoami",
        summary="Check an admin token",
        description="200 when the bearer token is the configured admin token.",
        responses=answers(200, "The token is the admin token"),
        tags=["admin"],
        security=ADMIN_SECURITY,
    )
    def whoami() -> dict[str, str]:
        require_admin(router, services())
        return {"role": "admin"}

    return router
