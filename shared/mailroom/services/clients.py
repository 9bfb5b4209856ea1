"""Registering API clients and authenticating their requests."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.secrets import SecretHasher
from mailroom.domain.errors import ClientSuspended, Unauthenticated
from mailroom.domain.model import Client, ClientStatus

LIVE_KEY_PREFIX = "mr_live_"


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    """A new client with its secret: the only time the secret is in clear."""

    client: Client
    api_key: str
    api_secret: str


def register_client(
    uow: UnitOfWork,
    hasher: SecretHasher,
    *,
    name: str,
    rate_limit: int = 600,
    quota_limit: int = 100_000,
) -> RegisteredClient:
    api_key = LIVE_KEY_PREFIX + secrets.token_hex(12)
    api_secret = secrets.token_urlsafe(32)  # 32 random bytes
    client = Client(
        id=uuid.uuid4(),
        name=name,
        api_key_prefix=api_key,
        api_secret_hash=hasher.hash(api_secret),
        rate_limit=rate_limit,
        quota_limit=quota_limit,
    )
    with uow:
        uow.clients.add(client)
        uow.commit()
    return RegisteredClient(client=client, api_key=api_key, api_secret=api_secret)


def authenticate(
    uow: UnitOfWork, hasher: SecretHasher, api_key: str | None, api_secret: str | None
) -> Client:
    """The client these credentials belong to; one error for every way they are wrong."""
    if not api_key or not api_secret:
        raise Unauthenticated("send X-Api-Key and X-Api-Secret headers")
    with uow:
        client = uow.clients.get_by_api_key(api_key)
    if client is None:
        hasher.burn_time(api_secret)
        raise Unauthenticated("the API key or secret is wrong")
    if not hasher.verify(client.api_secret_hash, api_secret):
        raise Unauthenticated("the API key or secret is wrong")
    if client.status is ClientStatus.SUSPENDED:
        raise ClientSuspended("this client is suspended")
    return client
