"""Worker claims on the in-memory fakes: batches, duplicates and leases (issue 7).

The same stories on real PostgreSQL, with real concurrency, are in
tests/integration/test_claims.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from mailroom.adapters.providers.base import FailureKind
from mailroom.adapters.templates import TemplateRenderer, TemplateSource
from mailroom.domain.model import EventType, MessageStatus
from mailroom.services.delivery import DeliveryResult, SendItem, deliver_batch
from tests.fakes import DictTemplateStore, FakeUnitOfWork
from tests.provider_fakes import chain_of
from tests.unit.test_delivery_retries import HELLO, NO_JITTER, Named, _accept


def _deliver(uow: FakeUnitOfWork, provider: Named, *items: SendItem) -> list[DeliveryResult]:
    outcomes = deliver_batch(
        uow,
        DictTemplateStore(HELLO),
        TemplateRenderer(),
        chain_of(provider),
        items=list(items),
        max_attempts=3,
        backoff=NO_JITTER,
        lease_seconds=60,
    )
    return [outcome.result for outcome in outcomes]


def test_a_record_duplicated_inside_one_batch_is_sent_once() -> None:
    # GIVEN one message whose SQS record arrives twice in the same batch
    uow = FakeUnitOfWork()
    message_id = _accept(uow)
    provider = Named("smtp", None)
    # WHEN the worker handles the batch
    results = _deliver(uow, provider, SendItem(message_id), SendItem(message_id))
    # THEN one send, the copy acknowledged, one sent event
    assert results == [DeliveryResult.SENT, DeliveryResult.IN_PROGRESS]
    assert len(provider.sent) == 1
    assert [e.type for e in uow.messages.events(message_id)][-1] is EventType.SENT


def test_a_batch_records_each_outcome_and_releases_every_claim() -> None:
    # GIVEN two queued messages, one of which the provider refuses for now
    uow = FakeUnitOfWork()
    first, second = _accept(uow), _accept(uow)
    provider = Named("smtp", None, FailureKind.TRANSIENT)
    # WHEN one batch carries both
    results = _deliver(uow, provider, SendItem(first), SendItem(second))
    # THEN the first is sent, the second queued again with its next attempt
    assert results == [DeliveryResult.SENT, DeliveryResult.RETRY]
    sent, retried = uow.messages.rows[first], uow.messages.rows[second]
    assert (sent.status, sent.lease_expires_at) == (MessageStatus.SENT, None)
    assert (retried.status, retried.lease_expires_at) == (MessageStatus.QUEUED, None)
    assert retried.next_attempt_at is not None
    assert retried.next_attempt_at > datetime.now(UTC) + timedelta(seconds=50)


def test_a_live_claim_is_acknowledged_and_an_expired_one_taken_over() -> None:
    # GIVEN a message a first worker claimed and never finished
    uow = FakeUnitOfWork()
    message_id = _accept(uow)
    uow.messages.claim([message_id], uuid.uuid4(), lease_seconds=60)
    provider = Named("smtp", None)
    # WHEN a redelivery arrives while the lease is live: acknowledged, not sent
    assert _deliver(uow, provider, SendItem(message_id)) == [DeliveryResult.IN_PROGRESS]
    assert provider.sent == []
    # WHEN it arrives after the lease ran out: taken over and sent
    uow.messages.now = datetime.now(UTC) + timedelta(seconds=61)
    assert _deliver(uow, provider, SendItem(message_id)) == [DeliveryResult.SENT]
    assert len(provider.sent) == 1
    assert uow.messages.rows[message_id].claims == 2


def test_a_batch_reads_each_template_once_and_the_next_batch_sees_an_edit() -> None:
    # GIVEN a store that counts its reads, and three messages of one template
    class CountingStore(DictTemplateStore):
        reads = 0

        def get(
            self, name: str, version: int | None = None, *, client_id: uuid.UUID | None = None
        ) -> TemplateSource:
            CountingStore.reads += 1
            return super().get(name, version, client_id=client_id)

    uow = FakeUnitOfWork()
    store = CountingStore(HELLO)
    provider = Named("smtp", None, None, None, None)

    def deliver(*message_ids: uuid.UUID) -> None:
        deliver_batch(
            uow,
            store,
            TemplateRenderer(),
            chain_of(provider),
            items=[SendItem(message_id) for message_id in message_ids],
            max_attempts=3,
            backoff=NO_JITTER,
            lease_seconds=60,
        )

    # WHEN one batch carries all three
    deliver(_accept(uow), _accept(uow), _accept(uow))
    # THEN the template was read once for them
    assert CountingStore.reads == 1
    assert len(provider.sent) == 3
    # AND after an edit, the next batch renders the new source
    store.sources["hello"] = TemplateSource(name="hello", subject="New {{ name }}", html="<p/>")
    deliver(_accept(uow))
    assert CountingStore.reads == 2
    assert provider.sent[-1].mime.count(b"Subject: New Ada") == 1
