"""API keys without I/O: the token format, scopes, allowlists, limits and refusal audits."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailroom.adapters.redis_tenancy import tightest
from mailroom.adapters.tenancy import Bucket
from mailroom.domain.api_keys import (
    MAX_ACTIVE_KEYS_PER_CLIENT,
    TOKEN_LENGTH,
    decode_token,
    encode_token,
    ip_allowed,
    parse_allowlist,
    parse_scopes,
)
from mailroom.domain.errors import (
    InvalidCidr,
    InvalidToken,
    IpNotAllowed,
    KeyLimitReached,
    UnknownScope,
)
from mailroom.domain.tenancy import Actor, KeyKind, QuotaPeriod, Scope
from mailroom.entrypoints.client_gate import presented
from mailroom.services import api_keys, clients
from mailroom.services.api_keys import KeySpec, RefusalAudit
from mailroom.services.authentication import Authenticator, VerifiedCredentialCache
from tests.fakes import CountingHasher, FakeCredentialVersions, FakeUnitOfWork, PlainHasher

KEY_IDS = st.builds(
    lambda mode, digits: f"mr_{mode}_{digits}",
    st.sampled_from(["live", "test"]),
    st.text("0123456789abcdef", min_size=24, max_size=24),
)
SECRETS = st.text(string.ascii_letters + string.digits + "-_", min_size=43, max_size=43)
ACTOR = Actor("admin:test", "127.0.0.1")


@given(KEY_IDS, SECRETS)
def test_a_token_carries_its_key_id_and_secret_back(key_id: str, secret: str) -> None:
    token = encode_token(key_id, secret)
    assert len(token) == TOKEN_LENGTH
    assert token.startswith(key_id + "_")
    assert decode_token(token) == (key_id, secret)


@given(KEY_IDS, SECRETS, st.data())
def test_any_one_character_typo_fails_the_checksum(
    key_id: str, secret: str, data: st.DataObject
) -> None:
    token = encode_token(key_id, secret)
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(
        st.sampled_from(string.ascii_letters + string.digits + "_-").filter(
            lambda c: c != token[position]
        )
    )
    typo = token[:position] + replacement + token[position + 1 :]
    assert decode_token(typo) is None


@given(st.text(max_size=200))
def test_arbitrary_text_is_never_a_token_unless_it_checks_out(text: str) -> None:
    decoded = decode_token(text)
    if decoded is not None:
        assert encode_token(*decoded) == text


def test_a_malformed_bearer_token_is_refused_without_any_lookup() -> None:
    # GIVEN an authenticator whose every dependency counts its use
    uow, hasher, versions = FakeUnitOfWork(), CountingHasher(), FakeCredentialVersions()
    good = encode_token("mr_live_" + "a" * 24, "s" * 43)
    for bad in ["Bearer " + good[:-1] + "0", "Bearer mr_live_x", "Basic abc", "Bearer "]:
        # WHEN the header is read
        with pytest.raises(InvalidToken) as refused:
            presented({"authorization": bad}, "203.0.113.1")
        # THEN it is a 401 invalid_token before anything was asked
        assert refused.value.code == "invalid_token"
    assert (hasher.verifications, hasher.burned, versions.reads, uow.commits) == (0, 0, 0, 0)
    assert presented({"authorization": f"Bearer {good}"}, None).api_key == "mr_live_" + "a" * 24


def test_scopes_must_be_known_names() -> None:
    assert parse_scopes(["email:send", "admin"]) == {Scope.EMAIL_SEND, Scope.ADMIN}
    with pytest.raises(UnknownScope) as refused:
        parse_scopes(["email:send", "email:all", "root"])
    assert refused.value.code == "unknown_scope"
    assert [d.get("value") for d in refused.value.details[:2]] == ["email:all", "root"]


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "10.0.0.7/8", "::1/129", "abc", "", "1.2.3"])
def test_cidrs_that_do_not_parse_are_refused(entry: str) -> None:
    with pytest.raises(InvalidCidr) as refused:
        parse_allowlist(["192.0.2.0/24", entry])
    assert refused.value.details[0]["field"] == "ip_allowlist.1"


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("192.0.2.10", True),
        ("192.0.3.10", False),
        ("2001:db8:1::1", True),
        ("2001:db9::1", False),
        ("::ffff:192.0.2.77", True),
        ("::ffff:192.0.3.77", False),
        (None, False),
        ("not an address", False),
    ],
)
def test_allowlists_match_ipv4_ipv6_and_ipv4_mapped_callers(
    source: str | None, allowed: bool
) -> None:
    allowlist = parse_allowlist(["192.0.2.0/24", "2001:db8::/32"])
    assert ip_allowed(allowlist, source) is allowed
    assert ip_allowed((), source) is True  # no allowlist: anywhere


def _client(uow: FakeUnitOfWork) -> clients.RegisteredClient:
    return clients.register_client(uow, PlainHasher(), name="acme")


def test_the_key_limit_is_a_409_and_writes_nothing() -> None:
    uow = FakeUnitOfWork()
    client_id = _client(uow).client.id
    spec = KeySpec(name="k", scopes=["email:send"])
    for _ in range(MAX_ACTIVE_KEYS_PER_CLIENT - 1):  # the client's first key counts
        api_keys.issue_key(uow, PlainHasher(), client_id, spec, actor=ACTOR)
    audit_rows, key_rows = len(uow.audit.entries), len(uow.api_keys.rows)
    with pytest.raises(KeyLimitReached) as refused:
        api_keys.issue_key(uow, PlainHasher(), client_id, spec, actor=ACTOR)
    assert refused.value.code == "key_limit_reached"
    assert (len(uow.audit.entries), len(uow.api_keys.rows)) == (audit_rows, key_rows)
    # AND a revoked key frees its place
    some_key = next(k for k in uow.api_keys.rows if k != _first(uow))
    api_keys.revoke_key(uow, FakeCredentialVersions(), client_id, some_key, actor=ACTOR)
    api_keys.issue_key(uow, PlainHasher(), client_id, spec, actor=ACTOR)


def _first(uow: FakeUnitOfWork) -> str:
    return next(iter(uow.api_keys.rows))


def _world() -> tuple[FakeUnitOfWork, Authenticator, clients.RegisteredClient]:
    uow = FakeUnitOfWork()
    authenticator = Authenticator(
        lambda: uow,
        PlainHasher(),
        FakeCredentialVersions(),
        VerifiedCredentialCache(ttl_seconds=60, max_entries=10),
        last_used_interval_seconds=300,
    )
    return uow, authenticator, _client(uow)


def test_the_caller_carries_the_keys_scopes_and_mode() -> None:
    uow, authenticator, registered = _world()
    issued = api_keys.issue_key(
        uow,
        PlainHasher(),
        registered.client.id,
        KeySpec(name="ci", scopes=["email:read"], mode=KeyKind.TEST),
        actor=ACTOR,
    )
    caller = authenticator.authenticate(issued.key.id, issued.secret).caller
    assert (caller.key_id, caller.scopes, caller.mode) == (
        issued.key.id,
        frozenset({Scope.EMAIL_READ}),
        KeyKind.TEST,
    )
    assert caller.client.id == registered.client.id


def test_an_allowlisted_key_is_refused_elsewhere_even_when_cached() -> None:
    uow, authenticator, registered = _world()
    issued = api_keys.issue_key(
        uow,
        PlainHasher(),
        registered.client.id,
        KeySpec(name="office", scopes=["admin"], ip_allowlist=["192.0.2.0/24"]),
        actor=ACTOR,
    )
    authenticator.authenticate(issued.key.id, issued.secret, source_ip="192.0.2.1")
    with pytest.raises(IpNotAllowed):
        authenticator.authenticate(issued.key.id, issued.secret, source_ip="198.51.100.1")


def test_last_used_is_written_per_key_at_most_once_per_interval() -> None:
    uow, authenticator, registered = _world()
    for _ in range(5):
        authenticator.authenticate(registered.api_key, registered.api_secret)
    assert [key for key, _ in uow.api_keys.touched] == [registered.api_key]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_audited_at_most_once_per_key_and_reason_per_window() -> None:
    # GIVEN a refusal audit with a one-minute window
    uow, clock = FakeUnitOfWork(), Clock()
    audit = RefusalAudit(lambda: uow, window_seconds=60, monotonic=clock)
    # WHEN one key is refused 50 times in a minute for scope, and once for IP
    written = [audit.record("k1", "insufficient_scope", {}, "192.0.2.1") for _ in range(50)]
    written.append(audit.record("k1", "ip_not_allowed", {}, "192.0.2.1"))
    # THEN two rows were written, one per reason
    assert written.count(True) == 2
    assert [e.after["reason"] for e in uow.audit.entries if e.after] == [
        "insufficient_scope",
        "ip_not_allowed",
    ]
    # AND after the window the next row counts what was left out
    clock.now = 61
    assert audit.record("k1", "insufficient_scope", {}, "192.0.2.1")
    last = uow.audit.entries[-1]
    assert last.after is not None
    assert (last.actor, last.after["refusals_not_logged_before"]) == ("key:k1", 49)


def test_a_refusal_audit_never_fails_the_request() -> None:
    class Broken(FakeUnitOfWork):
        def commit(self) -> None:
            raise RuntimeError("database down")

    broken = Broken()
    assert RefusalAudit(lambda: broken).record("k", "ip_not_allowed", {}, None) is False


@pytest.mark.parametrize(
    ("allowed", "numbers", "expected"),
    [
        # allowed: the bucket with the fewest tokens left
        (True, [5, 10, 0, 2, 40, 0, 900, 1, 0], ("key", 2)),
        # refused: the refusing bucket that takes longest to refill
        (False, [0, 60_000, 1000, 0, 60_000, 20_000, 50, 10, 0], ("key", 0)),
    ],
)
def test_the_tightest_bucket_speaks_for_all(
    allowed: bool, numbers: list[int], expected: tuple[str, int]
) -> None:
    buckets = [Bucket("c", 10, "client"), Bucket("k", 3, "key"), Bucket("g", 1000, "global")]
    decision = tightest(buckets, allowed, numbers)
    assert (decision.level, decision.remaining) == expected


def test_a_day_is_its_own_quota_period() -> None:
    day = QuotaPeriod.day_containing(datetime(2026, 12, 6, 23, 59, tzinfo=UTC))
    assert day.label == "2026-12-06"
    assert day.is_day
    assert day.end - day.start == timedelta(days=1)
    assert not QuotaPeriod.parse("2026-12").is_day
