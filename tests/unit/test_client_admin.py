"""Client administration and quotas as services, on fakes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mailroom.adapters.tenancy import CredentialVersions
from mailroom.domain.errors import (
    ChangeNotPropagated,
    ClientNotFound,
    DependencyUnavailable,
    InvalidRequest,
    QuotaExceeded,
)
from mailroom.domain.model import ClientStatus, EventType, Message, MessageStatus
from mailroom.domain.tenancy import Actor, KeyKind, QuotaPeriod, Scope
from mailroom.services import clients, quotas
from tests.fakes import FakeCredentialVersions, FakeQuotaCounter, FakeUnitOfWork, PlainHasher

ADMIN = Actor("admin:0123456789ab", "203.0.113.9")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NOVEMBER = QuotaPeriod.containing(NOW)


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


def _register(uow: FakeUnitOfWork, **kwargs: object) -> clients.RegisteredClient:
    return clients.register_client(uow, PlainHasher(), name="acme", actor=ADMIN, **kwargs)  # type: ignore[arg-type]


class TestRegister:
    def test_keys_have_the_live_prefix_and_only_the_hash_is_stored(
        self, uow: FakeUnitOfWork
    ) -> None:
        registered = _register(uow)
        assert registered.api_key.startswith("mr_live_")
        assert len(registered.api_key) == len("mr_live_") + 24
        assert len(registered.api_secret) == 43
        stored = uow.api_keys.rows[registered.api_key]
        assert stored.secret_hash == "plain$" + registered.api_secret
        assert stored.scopes == {Scope.ADMIN}
        assert stored.client_id == registered.client.id
        assert registered.api_secret not in repr(registered)  # neither secret nor hash

    def test_a_test_client_gets_a_test_key(self, uow: FakeUnitOfWork) -> None:
        # issue 15: mr_test_ keys exist now (what test mode does is item 2's)
        registered = _register(uow, kind=KeyKind.TEST)
        assert registered.api_key.startswith("mr_test_")
        assert uow.api_keys.rows[registered.api_key].mode is KeyKind.TEST

    def test_creation_is_audited_without_secret_or_hash(self, uow: FakeUnitOfWork) -> None:
        registered = _register(uow)
        [entry] = uow.audit.entries
        assert entry.after is not None
        assert entry.after["key"]["key_id"] == registered.api_key
        assert entry.after["key"]["scopes"] == ["admin"]
        assert (entry.actor, entry.action, entry.target_id, entry.source_ip) == (
            ADMIN.name,
            "client.create",
            str(registered.client.id),
            ADMIN.source_ip,
        )
        assert entry.before is None
        assert entry.after is not None
        assert entry.after["api_key"] == registered.api_key
        assert registered.api_secret not in repr(entry)
        assert "plain$" not in repr(entry)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"rate_limit": 0}, "rate_limit"),
            ({"quota_limit": -1}, "quota_limit"),
            ({"provider_order": ["carrier-pigeon"]}, "provider_order.0"),
            ({"provider_order": ["smtp", "smtp"]}, "provider_order"),
        ],
    )
    def test_bad_limits_and_orders_are_refused(
        self, uow: FakeUnitOfWork, kwargs: dict[str, object], field: str
    ) -> None:
        with pytest.raises(InvalidRequest) as refused:
            _register(uow, known_providers=("smtp", "ses"), **kwargs)
        assert field in {d["field"] for d in refused.value.details}
        assert uow.clients.rows == {}


class TestChanges:
    def test_update_changes_only_what_is_given_and_audits_before_and_after(
        self, uow: FakeUnitOfWork
    ) -> None:
        registered = _register(uow, provider_order=["ses", "smtp"])
        versions = FakeCredentialVersions()
        updated = clients.update_client(
            uow,
            versions,
            registered.api_key,
            clients.ClientChanges(quota_limit=5),
            known_providers=("smtp", "ses"),
            actor=ADMIN,
        )
        assert (updated.name, updated.quota_limit, updated.provider_order) == (
            "acme",
            5,
            ["ses", "smtp"],
        )
        entry = uow.audit.entries[-1]
        assert entry.action == "client.update"
        assert entry.before is not None
        assert entry.after is not None
        assert (entry.before["quota_limit"], entry.after["quota_limit"]) == (100_000, 5)
        assert registered.api_key in versions.versions  # announced

    def test_a_null_provider_order_goes_back_to_the_default(self, uow: FakeUnitOfWork) -> None:
        registered = _register(uow, provider_order=["smtp"])
        updated = clients.update_client(
            uow,
            FakeCredentialVersions(),
            str(registered.client.id),
            clients.ClientChanges(provider_order=None),
            known_providers=("smtp",),
            actor=ADMIN,
        )
        assert updated.provider_order is None

    def test_suspend_and_reactivate_are_audited(self, uow: FakeUnitOfWork) -> None:
        registered = _register(uow)
        versions = FakeCredentialVersions()
        suspended = clients.suspend_client(uow, versions, registered.api_key, actor=ADMIN)
        assert suspended.status is ClientStatus.SUSPENDED
        first = versions.versions[registered.api_key]
        active = clients.reactivate_client(uow, versions, registered.api_key, actor=ADMIN)
        assert active.status is ClientStatus.ACTIVE
        assert versions.versions[registered.api_key] != first
        assert [e.action for e in uow.audit.entries] == [
            "client.create",
            "client.suspend",
            "client.reactivate",
        ]

    def test_rotation_keeps_the_old_hash_until_the_grace_ends(self, uow: FakeUnitOfWork) -> None:
        registered = _register(uow)
        rotated = clients.rotate_secret(
            uow,
            PlainHasher(),
            FakeCredentialVersions(),
            registered.api_key,
            grace=timedelta(hours=2),
            actor=ADMIN,
            now=NOW,
        )
        stored = uow.api_keys.rows[registered.api_key]
        assert stored.secret_hash == "plain$" + rotated.api_secret
        assert stored.previous_secret_hash == "plain$" + registered.api_secret
        assert stored.previous_secret_expires_at == NOW + timedelta(hours=2)
        assert rotated.api_key == registered.api_key
        entry = uow.audit.entries[-1]
        assert (entry.action, entry.target_id) == (
            "client.rotate_secret",
            str(registered.client.id),
        )
        assert entry.after is not None
        assert entry.after["key_id"] == registered.api_key
        assert rotated.api_secret not in repr(entry)
        assert registered.api_secret not in repr(entry)

    def test_an_unknown_client_is_not_found(self, uow: FakeUnitOfWork) -> None:
        for ref in (str(uuid.uuid4()), "mr_live_" + "0" * 24, "whatever"):
            with pytest.raises(ClientNotFound):
                clients.suspend_client(uow, FakeCredentialVersions(), ref, actor=ADMIN)
        assert [e.action for e in uow.audit.entries] == []

    def test_a_change_redis_cannot_announce_is_saved_and_says_so(self, uow: FakeUnitOfWork) -> None:
        # GIVEN Redis refuses the version bump
        class DownVersions(FakeCredentialVersions):
            def bump(self, api_key: str) -> None:
                raise DependencyUnavailable("Redis is unavailable")

        registered = _register(uow)
        versions: CredentialVersions = DownVersions()
        # WHEN the client is suspended
        with pytest.raises(ChangeNotPropagated) as refused:
            clients.suspend_client(uow, versions, registered.api_key, actor=ADMIN)
        # THEN the suspension is saved and audited, and the answer says to repeat it
        assert refused.value.code == "change_not_propagated"
        assert uow.clients.rows[registered.client.id].status is ClientStatus.SUSPENDED
        assert uow.audit.entries[-1].action == "client.suspend"


def _accepted_message(uow: FakeUnitOfWork, client_id: uuid.UUID, *, at: datetime) -> uuid.UUID:
    message = Message(
        id=uuid.uuid4(),
        client_id=client_id,
        trace_id="t",
        template_name="welcome",
        from_address="a@example.com",
        to=["b@example.com"],
        created_at=at,
    )
    with uow:
        uow.messages.add(message)
        uow.messages.append_event(message.id, EventType.ACCEPTED, {})
        uow.commit()
    return message.id


class TestQuota:
    def test_the_counter_starts_from_the_messages_table(self, uow: FakeUnitOfWork) -> None:
        # GIVEN two messages already accepted this month and no counter (Redis lost it)
        client = _register(uow, quota_limit=3).client
        for _ in range(2):
            _accepted_message(uow, client.id, at=NOW)
        counter = FakeQuotaCounter()
        # WHEN two more sends are charged
        charge = quotas.QuotaCharge(counter, lambda: uow, client, now=NOW)
        charge.take()
        # THEN the third is accepted and the fourth refused
        with pytest.raises(QuotaExceeded):
            quotas.QuotaCharge(counter, lambda: uow, client, now=NOW).take()
        assert counter.read(client.id, NOVEMBER) == 3

    def test_the_refusal_says_when_the_period_resets(self, uow: FakeUnitOfWork) -> None:
        client = _register(uow, quota_limit=0).client
        with pytest.raises(QuotaExceeded) as refused:
            quotas.QuotaCharge(FakeQuotaCounter(), lambda: uow, client, now=NOW).take()
        assert refused.value.code == "quota_exceeded"
        assert refused.value.details == [
            {"quota_limit": 0, "used": 0, "period": "2026-11", "resets_at": "2026-12-01T00:00:00Z"}
        ]
        assert refused.value.retry_after_seconds == 7 * 86400 + 12 * 3600

    def test_a_charge_is_given_back_when_the_send_fails(self, uow: FakeUnitOfWork) -> None:
        client = _register(uow).client
        counter = FakeQuotaCounter()

        def failing_send() -> None:
            with quotas.QuotaCharge(counter, lambda: uow, client, now=NOW) as charge:
                charge.take()
                assert counter.read(client.id, NOVEMBER) == 1
                raise RuntimeError("the database went away")

        with pytest.raises(RuntimeError):
            failing_send()
        assert counter.read(client.id, NOVEMBER) == 0

    def test_a_charge_not_taken_is_not_given_back(self, uow: FakeUnitOfWork) -> None:
        client = _register(uow).client
        counter = FakeQuotaCounter()
        counter.seed(client.id, NOVEMBER, 4)
        with (
            pytest.raises(InvalidRequest),
            quotas.QuotaCharge(counter, lambda: uow, client, now=NOW),
        ):
            raise InvalidRequest("invalid before the charge")
        assert counter.read(client.id, NOVEMBER) == 4

    def test_reconcile_sets_the_counter_to_the_table_and_skips_refused_messages(
        self, uow: FakeUnitOfWork
    ) -> None:
        # GIVEN three accepted messages, one whose enqueue failed, one suppressed (no accepted
        # event), one from last month, and a counter that drifted to 9
        client = _register(uow).client
        for _ in range(3):
            _accepted_message(uow, client.id, at=NOW)
        failed = _accepted_message(uow, client.id, at=NOW)
        with uow:
            uow.messages.append_event(failed, EventType.ENQUEUE_FAILED, {})
            uow.commit()
        suppressed = Message(
            id=uuid.uuid4(),
            client_id=client.id,
            trace_id="t",
            template_name="welcome",
            from_address="a@example.com",
            to=["b@example.com"],
            status=MessageStatus.FAILED,
            created_at=NOW,
        )
        with uow:
            uow.messages.add(suppressed)
            uow.commit()
        _accepted_message(uow, client.id, at=NOW - timedelta(days=30))
        counter = FakeQuotaCounter()
        counter.seed(client.id, NOVEMBER, 9)
        # WHEN the month is reconciled
        [result] = quotas.reconcile_quotas(
            counter, lambda: uow, NOVEMBER, client_ref=client.api_key_prefix, actor=ADMIN
        )
        # THEN the counter reads what the table says, and the run is audited
        assert (result.counter_before, result.counted, result.counter_after) == (9, 3, 3)
        assert result.corrected
        assert result.settled
        assert counter.read(client.id, NOVEMBER) == 3
        assert uow.audit.entries[-1].action == "quota.reconcile"

    def test_reconcile_does_not_overwrite_a_counter_that_moved(self, uow: FakeUnitOfWork) -> None:
        # GIVEN sends that move the counter every time the table is counted
        client = _register(uow).client
        counter = FakeQuotaCounter()
        counter.seed(client.id, NOVEMBER, 5)

        def busy_uow() -> FakeUnitOfWork:
            counter.counters[(client.id, NOVEMBER.label)] += 1  # a send lands meanwhile
            return uow

        # WHEN it is reconciled
        result = quotas.reconcile_quota(counter, busy_uow, client.id, NOVEMBER)
        # THEN the counter was left alone and the result says to run it again
        assert not result.settled
        assert counter.read(client.id, NOVEMBER) == 5 + quotas.RECONCILE_ATTEMPTS
