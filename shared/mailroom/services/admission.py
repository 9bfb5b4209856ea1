"""Letting a client API request in: who is calling, and may they call now."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailroom.adapters.tenancy import Bucket, RateLimiter
from mailroom.domain.errors import InvalidRequest, RateLimited
from mailroom.domain.model import Client
from mailroom.domain.tenancy import Caller, KeyKind, RateDecision
from mailroom.services.authentication import Authenticator

GLOBAL_BUCKET = "global"


@dataclass(frozen=True, slots=True)
class Admission:
    caller: Caller
    rate: RateDecision
    # Where the request came from (API Gateway's sourceIp), for refusal audits.
    source_ip: str | None = None
    # The buckets the request was taken from: a batch takes its further items'
    # tokens from the same ones (issue 17).
    buckets: tuple[Bucket, ...] = ()

    @property
    def client(self) -> Client:
        return self.caller.client

    def refuse_if_limited(self) -> None:
        if not self.rate.allowed:
            raise RateLimited(
                f"more than {self.rate.limit} requests per minute ({self.rate.level} limit); "
                f"try again in {self.rate.retry_after_seconds} s",
                retry_after_seconds=self.rate.retry_after_seconds,
                details=[
                    {
                        "limit_per_minute": self.rate.limit,
                        "retry_after_seconds": self.rate.retry_after_seconds,
                        "level": self.rate.level,
                    }
                ],
            )


def admit(
    authenticator: Authenticator,
    limiter: RateLimiter,
    *,
    api_key: str | None,
    api_secret: str | None,
    source_ip: str | None = None,
    global_per_minute: int | None = None,
) -> Admission:
    """Authenticate, then take a token from each tier: global, client, key.

    Authentication comes first so an unauthenticated caller cannot drain a
    client's bucket. Every tier is one token bucket in Redis, all taken in one
    script call (all or nothing); the decision is the tightest tier's. The
    caller decides what a refusal looks like: the decision is returned, not
    raised, because a 429 carries its numbers too.
    """
    authenticated = authenticator.authenticate(api_key, api_secret, source_ip=source_ip)
    key = authenticated.key
    caller = authenticated.caller
    client = caller.client
    mode = caller_mode(client, caller.mode)
    if mode is not caller.mode:
        caller = replace(caller, mode=mode)
    buckets = [Bucket(f"client:{client.id}", client.rate_limit, "client")]
    if key.rate_limit is not None:
        buckets.append(Bucket(f"key:{key.id}", key.rate_limit, "key"))
    if global_per_minute:
        buckets.append(Bucket(GLOBAL_BUCKET, global_per_minute, "global"))
    return Admission(caller, limiter.take_all(buckets), source_ip, tuple(buckets))


def take_more(limiter: RateLimiter, admission: Admission, items: int) -> None:
    """Charge a batch's items beyond the first (its admission took one token).

    Rate limits count sends: a batch of ``items`` takes that many tokens
    from each bucket, all or none. A batch larger than a bucket could ever
    hold is refused as invalid (it would never pass); one that does not fit
    now is 429 and takes nothing.
    """
    if items <= 1 or not admission.buckets:
        return
    smallest = min(admission.buckets, key=lambda bucket: bucket.per_minute)
    if items > smallest.per_minute:
        raise InvalidRequest(
            f"a batch of {items} sends is more than the {smallest.level} rate limit of "
            f"{smallest.per_minute} per minute allows at once: send at most "
            f"{smallest.per_minute} items per batch",
            details=[{"field": "body", "limit_per_minute": smallest.per_minute}],
        )
    decision = limiter.take_all(admission.buckets, cost=items - 1)
    replace(admission, rate=decision).refuse_if_limited()


def caller_mode(client: Client, key_mode: KeyKind) -> KeyKind:
    """The mode a request acts in: the key's, or TEST for every key of a sandbox-mode client."""
    return KeyKind.TEST if client.sandbox_mode else key_mode
