"""Letting a client API request in: who is calling, and may they call now."""

from __future__ import annotations

from dataclasses import dataclass

from mailroom.adapters.tenancy import Bucket, RateLimiter
from mailroom.domain.errors import RateLimited
from mailroom.domain.model import Client
from mailroom.domain.tenancy import Caller, KeyKind, RateDecision, Scope
from mailroom.services.authentication import Authenticator

GLOBAL_BUCKET = "global"


@dataclass(frozen=True, slots=True)
class Admission:
    caller: Caller
    rate: RateDecision

    @property
    def client(self) -> Client:
        return self.caller.client

    def refuse_if_limited(self) -> None:
        if not self.rate.allowed:
            raise RateLimited(
                f"more than {self.rate.limit} requests per minute; "
                f"try again in {self.rate.retry_after_seconds} s",
                retry_after_seconds=self.rate.retry_after_seconds,
                details=[
                    {
                        "limit_per_minute": self.rate.limit,
                        "retry_after_seconds": self.rate.retry_after_seconds,
                    }
                ],
            )


def admit(
    authenticator: Authenticator,
    limiter: RateLimiter,
    *,
    api_key: str | None,
    api_secret: str | None,
    global_per_minute: int | None = None,
) -> Admission:
    """Authenticate, then take a token from the client's bucket (and the global one).

    Authentication comes first so an unauthenticated caller cannot drain a
    client's bucket. The caller decides what a refusal looks like: the
    decision is returned, not raised, because a 429 carries its numbers too.
    """
    client = authenticator.authenticate(api_key, api_secret)
    rate = limiter.take(
        Bucket(f"client:{client.id}", client.rate_limit),
        shared=Bucket(GLOBAL_BUCKET, global_per_minute) if global_per_minute else None,
    )
    # Every key pair of today acts for its whole client (issue 15 adds scoped keys).
    caller = Caller(
        client,
        key_id=client.api_key_prefix,
        scopes=frozenset({Scope.ADMIN}),
        mode=caller_mode(client, KeyKind.LIVE),
    )
    return Admission(caller, rate)


def caller_mode(client: Client, key_mode: KeyKind) -> KeyKind:
    """The mode a request acts in: the key's, or TEST for every key of a sandbox-mode client."""
    return KeyKind.TEST if client.sandbox_mode else key_mode
