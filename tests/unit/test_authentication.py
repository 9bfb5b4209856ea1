"""The verified-credential cache: argon2 once per TTL, yet every change applies at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailroom.domain.errors import ClientSuspended, Unauthenticated
from mailroom.domain.tenancy import Actor, Caller
from mailroom.services import clients
from mailroom.services.authentication import Authenticator, VerifiedCredentialCache
from mailroom.services.clients import RegisteredClient
from tests.fakes import CountingHasher, FakeCredentialVersions, FakeUnitOfWork

ADMIN = Actor("admin:test", "127.0.0.1")
TTL = 60.0


class Clock:
    """A monotonic clock and a wall clock that tests move by hand."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.wall = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.wall += timedelta(seconds=seconds)


class World:
    def __init__(self, *, ttl: float = TTL, max_entries: int = 100) -> None:
        self.uow = FakeUnitOfWork()
        self.hasher = CountingHasher()
        self.versions = FakeCredentialVersions()
        self.clock = Clock()
        self.authenticator = self.instance(ttl=ttl, max_entries=max_entries)
        self.client: RegisteredClient = clients.register_client(self.uow, self.hasher, name="acme")

    def instance(self, *, ttl: float = TTL, max_entries: int = 100) -> Authenticator:
        """Another API instance: its own cache, the same database and Redis."""
        return Authenticator(
            lambda: self.uow,
            self.hasher,
            self.versions,
            VerifiedCredentialCache(
                ttl_seconds=ttl, max_entries=max_entries, clock=self.clock.monotonic
            ),
            last_used_interval_seconds=300,
            monotonic=self.clock.monotonic,
            now=self.clock.now,
        )

    def login(self, authenticator: Authenticator | None = None, secret: str | None = None) -> None:
        (authenticator or self.authenticator).authenticate(
            self.client.api_key, secret or self.client.api_secret
        )


def test_a_warm_instance_verifies_once_and_then_reads_only_the_version() -> None:
    # GIVEN an instance that has verified the key pair once
    world = World()
    world.login()
    assert world.hasher.verifications == 1
    # WHEN the same key pair comes back many times within the TTL
    for _ in range(20):
        world.login()
    # THEN argon2 ran no more, and each request checked the version in Redis
    assert world.hasher.verifications == 1
    assert world.versions.reads == 21


def test_the_cache_expires_after_its_ttl() -> None:
    world = World()
    world.login()
    world.clock.advance(TTL + 1)
    world.login()
    assert world.hasher.verifications == 2


def test_a_ttl_of_zero_turns_the_cache_off() -> None:
    world = World(ttl=0)
    world.login()
    world.login()
    assert world.hasher.verifications == 2
    assert world.versions.reads == 0


def test_suspension_applies_at_once_on_every_warm_instance() -> None:
    # GIVEN two instances with the client's verification cached
    world = World()
    other = world.instance()
    world.login()
    world.login(other)
    # WHEN an admin suspends the client (through a third instance, as the admin function is)
    clients.suspend_client(world.uow, world.versions, world.client.api_key, actor=ADMIN)
    # THEN the very next request on each instance is refused
    for instance in (world.authenticator, other):
        with pytest.raises(ClientSuspended):
            world.login(instance)
    # AND reactivation applies at once too
    clients.reactivate_client(world.uow, world.versions, str(world.client.client.id), actor=ADMIN)
    world.login()
    world.login(other)


def test_a_limit_change_reaches_warm_instances_at_once() -> None:
    world = World()
    world.login()
    clients.update_client(
        world.uow,
        world.versions,
        world.client.api_key,
        clients.ClientChanges(rate_limit=7),
        known_providers=("smtp",),
        actor=ADMIN,
    )
    found = world.authenticator.authenticate(world.client.api_key, world.client.api_secret)
    assert found.caller.client.rate_limit == 7


def test_rotation_keeps_the_old_secret_for_the_grace_period_only() -> None:
    # GIVEN a warm instance and a rotation with one hour of grace
    world = World()
    world.login()
    rotated = clients.rotate_secret(
        world.uow,
        world.hasher,
        world.versions,
        world.client.api_key,
        grace=timedelta(hours=1),
        actor=ADMIN,
        now=world.clock.now(),
    )
    # THEN both secrets work inside the grace period
    world.login()
    world.login(secret=rotated.api_secret)
    # WHEN the grace period is over, even for an instance that cached the old secret
    world.clock.advance(3600 + 1)
    # THEN the old secret is refused and the new one works
    with pytest.raises(Unauthenticated):
        world.login()
    world.login(secret=rotated.api_secret)


def test_a_cached_old_secret_does_not_outlive_its_grace_period_within_the_ttl() -> None:
    # GIVEN a rotation whose grace ends in 10 s, shorter than the cache TTL
    world = World()
    clients.rotate_secret(
        world.uow,
        world.hasher,
        world.versions,
        world.client.api_key,
        grace=timedelta(seconds=10),
        actor=ADMIN,
        now=world.clock.now(),
    )
    world.login()  # the old secret, verified against the previous hash and cached
    # WHEN 11 s pass, well inside the TTL, with no further change to the client
    world.clock.advance(11)
    # THEN the cached verification has expired with the grace period
    with pytest.raises(Unauthenticated):
        world.login()


def test_rotation_without_grace_ends_the_old_secret_at_once() -> None:
    world = World()
    world.login()
    clients.rotate_secret(
        world.uow,
        world.hasher,
        world.versions,
        world.client.api_key,
        grace=timedelta(0),
        actor=ADMIN,
    )
    with pytest.raises(Unauthenticated):
        world.login()


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("mr_live_" + "0" * 24, "x" * 43),  # unknown key, well formed
        ("KEY", "y" * 43),  # wrong secret, well formed
        ("KEY", "short"),  # malformed secret
        ("mr_live_nobody", "x" * 43),  # malformed key
        ("mr_test_" + "0" * 24, "x" * 43),  # a sandbox key: none exist yet
    ],
)
def test_every_wrong_key_pair_gets_the_same_error(key: str, secret: str) -> None:
    world = World()
    with pytest.raises(Unauthenticated) as refused:
        world.authenticator.authenticate(world.client.api_key if key == "KEY" else key, secret)
    assert refused.value.message == clients.WRONG_CREDENTIALS
    assert refused.value.code == "unauthorized"


def test_an_unknown_key_costs_a_verification_like_a_wrong_secret() -> None:
    world = World()
    with pytest.raises(Unauthenticated):
        world.authenticator.authenticate("mr_live_" + "0" * 24, "x" * 43)
    with pytest.raises(Unauthenticated):
        world.authenticator.authenticate(world.client.api_key, "y" * 43)
    assert world.hasher.burned == 1
    assert world.hasher.verifications == 1


def test_a_malformed_key_pair_touches_neither_redis_nor_argon2() -> None:
    world = World()
    with pytest.raises(Unauthenticated):
        world.authenticator.authenticate("nope", "nope")
    assert (world.versions.reads, world.hasher.verifications, world.hasher.burned) == (0, 0, 0)


def test_failures_are_never_cached() -> None:
    world = World()
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            world.authenticator.authenticate(world.client.api_key, "y" * 43)
    assert world.hasher.verifications == 3
    assert len(world.authenticator.cache) == 0


def test_a_verification_racing_a_change_is_not_cached() -> None:
    # GIVEN a key with no version yet, and a change that lands while it is verified
    world = World()

    class RacingVersions(FakeCredentialVersions):
        def claim(self, api_key: str) -> str | None:
            self.bump(api_key)  # the admin's bump got there first
            return super().claim(api_key)

    world.versions = RacingVersions()
    authenticator = world.instance()
    # WHEN the request is verified
    world.login(authenticator)
    # THEN it is served, but nothing is cached for the next one
    assert len(authenticator.cache) == 0


def test_the_cache_holds_only_keyed_digests() -> None:
    world = World()
    world.login()
    cache = world.authenticator.cache
    fingerprints = list(cache._entries)
    assert len(fingerprints) == 1
    assert len(fingerprints[0]) == 32
    assert world.client.api_secret.encode() not in fingerprints[0]
    # another process (another random HMAC key) would not find it
    other = VerifiedCredentialCache(ttl_seconds=TTL, max_entries=10)
    assert other.fingerprint(world.client.api_key, world.client.api_secret) != fingerprints[0]


def test_the_cache_is_bounded() -> None:
    cache = VerifiedCredentialCache(ttl_seconds=TTL, max_entries=3, clock=lambda: 0.0)
    world = World()
    key = world.uow.api_keys.rows[world.client.api_key]
    caller = Caller(world.client.client, key.id, key.scopes)
    for n in range(10):
        cache.put(cache.fingerprint(f"k{n}", "s"), caller, key, "v1")
    assert len(cache) == 3
    assert cache.get(cache.fingerprint("k9", "s")) is not None
    assert cache.get(cache.fingerprint("k0", "s")) is None


def test_last_used_is_written_once_per_interval() -> None:
    # GIVEN a fresh client
    world = World()
    stored = world.uow.clients.rows[world.client.client.id]
    assert stored.last_used_at is None
    # WHEN it makes requests over six minutes, one every minute
    seen = []
    for _ in range(7):
        world.login()
        seen.append(world.uow.clients.rows[world.client.client.id].last_used_at)
        world.clock.advance(60)
    # THEN last_used_at was written at the first request and again after 5 minutes only
    assert len(set(seen)) == 2
    assert seen[0] == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert seen[5] == seen[0] + timedelta(minutes=5)
