"""Scopes: what a caller may do, and how a refusal reads (issue 15)."""

from __future__ import annotations

import uuid

from mailroom.domain.errors import InsufficientScope
from mailroom.domain.model import Client
from mailroom.domain.tenancy import Caller, KeyKind, Scope
from mailroom.entrypoints.http_errors import STATUS_BY_ERROR


def _client() -> Client:
    return Client(
        id=uuid.uuid4(),
        name="acme",
        api_key_prefix="mr_live_" + "0" * 24,
        rate_limit=60,
        quota_limit=100,
    )


def test_a_caller_holds_exactly_its_scopes_unless_it_is_admin() -> None:
    # GIVEN a sending-only caller and an admin caller
    sender = Caller(_client(), "k1", frozenset({Scope.EMAIL_SEND}))
    admin = Caller(_client(), "k2", frozenset({Scope.ADMIN}), KeyKind.TEST)
    # THEN the sender may send and nothing else; admin may do everything
    assert sender.allows(Scope.EMAIL_SEND)
    assert not any(sender.allows(scope) for scope in Scope if scope is not Scope.EMAIL_SEND)
    assert all(admin.allows(scope) for scope in Scope)
    assert admin.mode is KeyKind.TEST


def test_a_missing_scope_is_a_403_naming_it() -> None:
    # WHEN a caller lacks a scope THEN the error is a 403 with the scope in its details
    error = InsufficientScope(Scope.TEMPLATE_MANAGE.value)
    assert STATUS_BY_ERROR[InsufficientScope] == 403
    assert error.code == "insufficient_scope"
    assert error.details == [{"required_scope": "template:manage"}]
