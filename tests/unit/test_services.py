"""Use cases over in-memory fakes of the real interfaces."""

from __future__ import annotations

import uuid

import pytest

from mailroom.adapters.providers.base import FailureKind
from mailroom.adapters.templates import TemplateRenderer, TemplateSource
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import (
    ClientSuspended,
    EnqueueFailed,
    InvalidRequest,
    MessageNotFound,
    SubjectTooLong,
    Unauthenticated,
    UnknownTemplate,
)
from mailroom.domain.model import ClientStatus, EventType, MessageStatus
from mailroom.services import clients, sending, status
from mailroom.services.delivery import DeliveryResult, deliver_message
from tests.fakes import (
    DictTemplateStore,
    FakeUnitOfWork,
    PlainHasher,
    RecordingQueue,
    ScriptedProvider,
)
from tests.provider_fakes import chain_of

HELLO = TemplateSource(
    name="hello", subject="Hello {{ name }}", html="<p style='x'>Hi {{ name }}</p>"
)
LIMITS = sending.SendLimits(max_recipients=3, default_from="Mailroom <noreply@example.com>")


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


def _client(uow: FakeUnitOfWork) -> clients.RegisteredClient:
    return clients.register_client(uow, PlainHasher(), name="acme")


def _accept(uow: FakeUnitOfWork, queue: RecordingQueue, **body: object) -> uuid.UUID:
    client = _client(uow).client
    request = SendRequest.model_validate(
        {"template": "hello", "to": "ada@example.com", "props": {"name": "Ada"}, **body}
    )
    message = sending.accept_message(
        uow,
        queue,
        DictTemplateStore(HELLO),
        LIMITS,
        client=client,
        request=request,
        trace_id="t-1",
        renderer=TemplateRenderer(),
    )
    return message.id


class TestAuthenticate:
    def test_right_credentials_give_the_client(self, uow: FakeUnitOfWork) -> None:
        registered = _client(uow)
        assert registered.api_key.startswith("mr_live_")
        client = clients.authenticate(uow, PlainHasher(), registered.api_key, registered.api_secret)
        assert client.id == registered.client.id

    @pytest.mark.parametrize(
        ("key", "secret"),
        [(None, "s"), ("k", None), ("mr_live_unknown", "s"), ("KEY", "wrong")],
    )
    def test_every_wrong_credential_is_the_same_error(
        self, uow: FakeUnitOfWork, key: str | None, secret: str | None
    ) -> None:
        registered = _client(uow)
        key = registered.api_key if key == "KEY" else key
        with pytest.raises(Unauthenticated):
            clients.authenticate(uow, PlainHasher(), key, secret)

    def test_a_suspended_client_is_refused(self, uow: FakeUnitOfWork) -> None:
        registered = _client(uow)
        uow.clients.rows[registered.client.id].status = ClientStatus.SUSPENDED
        with pytest.raises(ClientSuspended):
            clients.authenticate(uow, PlainHasher(), registered.api_key, registered.api_secret)


class TestAcceptMessage:
    def test_row_event_and_queue_message_are_written(self, uow: FakeUnitOfWork) -> None:
        queue = RecordingQueue()
        message_id = _accept(uow, queue)
        stored = uow.messages.rows[message_id]
        assert stored.status is MessageStatus.QUEUED
        assert stored.from_address == "Mailroom <noreply@example.com>"
        assert stored.trace_id == "t-1"
        assert queue.sent == [(message_id, "t-1")]
        assert [e.type for e in uow.messages.events(message_id)] == [EventType.ACCEPTED]

    def test_unknown_template_writes_nothing(self, uow: FakeUnitOfWork) -> None:
        queue = RecordingQueue()
        with pytest.raises(UnknownTemplate):
            _accept(uow, queue, template="nope")
        assert uow.messages.rows == {}
        assert queue.sent == []

    def test_too_many_recipients_writes_nothing(self, uow: FakeUnitOfWork) -> None:
        with pytest.raises(InvalidRequest):
            _accept(
                uow, RecordingQueue(), cc=["b@example.com", "c@example.com"], bcc="d@example.com"
            )
        assert uow.messages.rows == {}

    def test_a_recipient_named_twice_is_stored_and_queued_once(self, uow: FakeUnitOfWork) -> None:
        # GIVEN one address in to, again in cc with another case, and in bcc
        message_id = _accept(
            uow,
            RecordingQueue(),
            to=["Ada <ada@example.com>", "ADA@Example.com"],
            cc=["ada@EXAMPLE.com", "grace@example.com"],
            bcc=["Grace@example.com"],
        )
        # THEN the first occurrence keeps it (to before cc before bcc)
        stored = uow.messages.rows[message_id]
        assert (stored.to, stored.cc, stored.bcc) == (
            ["Ada <ada@example.com>"],
            ["grace@example.com"],
            [],
        )
        assert stored.envelope_recipients == ["Ada <ada@example.com>", "grace@example.com"]

    def test_a_subject_over_998_octets_encoded_writes_nothing(self, uow: FakeUnitOfWork) -> None:
        # GIVEN a subject of 400 characters (under the field's 998) that
        # takes over 998 octets once encoded
        queue = RecordingQueue()
        with pytest.raises(SubjectTooLong) as caught:
            _accept(uow, queue, subject="ü" * 400)
        # THEN it is a render error with its stable code, and nothing is written
        assert caught.value.code == "subject_too_long"
        assert caught.value.details[0]["field"] == "subject"
        assert uow.messages.rows == {}
        assert queue.sent == []

    def test_queue_refusal_marks_the_row_failed(self, uow: FakeUnitOfWork) -> None:
        # GIVEN a queue that refuses every message
        # WHEN a message is accepted
        with pytest.raises(EnqueueFailed) as caught:
            _accept(uow, RecordingQueue(fail=True))
        # THEN the caller learns the id, and the row says failed with the reason
        message_id = uuid.UUID(caught.value.details[0]["message_id"])
        stored = uow.messages.rows[message_id]
        assert stored.status is MessageStatus.FAILED
        assert stored.last_error is not None
        assert "enqueue_failed" in stored.last_error
        assert [e.type for e in uow.messages.events(message_id)] == [
            EventType.ACCEPTED,
            EventType.ENQUEUE_FAILED,
        ]


class TestDeliverMessage:
    def _deliver(
        self, uow: FakeUnitOfWork, provider: ScriptedProvider, message_id: uuid.UUID, tries: int = 3
    ) -> DeliveryResult:
        return deliver_message(
            uow,
            DictTemplateStore(HELLO),
            TemplateRenderer(),
            chain_of(provider),
            message_id=message_id,
            max_attempts=tries,
        ).result

    def test_success_records_provider_and_rendered_subject(self, uow: FakeUnitOfWork) -> None:
        message_id = _accept(uow, RecordingQueue())
        provider = ScriptedProvider()
        assert self._deliver(uow, provider, message_id) is DeliveryResult.SENT
        stored = uow.messages.rows[message_id]
        assert (stored.status, stored.provider, stored.provider_msg_id) == (
            MessageStatus.SENT,
            "scripted",
            "scripted-1",
        )
        assert stored.subject == "Hello Ada"
        assert stored.attempts == 1
        assert stored.sent_at is not None
        assert b"Hi Ada" in provider.sent[0].mime

    def test_subject_override_wins(self, uow: FakeUnitOfWork) -> None:
        message_id = _accept(uow, RecordingQueue(), subject="Custom")
        self._deliver(uow, ScriptedProvider(), message_id)
        assert uow.messages.rows[message_id].subject == "Custom"

    def test_duplicate_delivery_does_not_send_again(self, uow: FakeUnitOfWork) -> None:
        message_id = _accept(uow, RecordingQueue())
        provider = ScriptedProvider()
        self._deliver(uow, provider, message_id)
        assert self._deliver(uow, provider, message_id) is DeliveryResult.ALREADY_DONE
        assert len(provider.sent) == 1

    def test_transient_failure_is_retried_until_attempts_run_out(self, uow: FakeUnitOfWork) -> None:
        message_id = _accept(uow, RecordingQueue())
        provider = ScriptedProvider(*[FailureKind.TRANSIENT] * 3)
        assert self._deliver(uow, provider, message_id) is DeliveryResult.RETRY
        assert uow.messages.rows[message_id].status is MessageStatus.QUEUED
        assert self._deliver(uow, provider, message_id) is DeliveryResult.RETRY
        assert self._deliver(uow, provider, message_id) is DeliveryResult.FAILED
        stored = uow.messages.rows[message_id]
        assert stored.status is MessageStatus.FAILED
        assert stored.attempts == 3
        assert stored.last_error is not None
        assert "transient" in stored.last_error
        types = [e.type for e in uow.messages.events(message_id)]
        assert types == [
            EventType.ACCEPTED,
            EventType.PROVIDER_FAILED,
            EventType.ATTEMPT_FAILED,
            EventType.PROVIDER_FAILED,
            EventType.ATTEMPT_FAILED,
            EventType.PROVIDER_FAILED,
            EventType.FAILED,
        ]

    def test_permanent_failure_fails_at_once(self, uow: FakeUnitOfWork) -> None:
        message_id = _accept(uow, RecordingQueue())
        assert (
            self._deliver(uow, ScriptedProvider(FailureKind.PERMANENT), message_id)
            is DeliveryResult.FAILED
        )
        assert uow.messages.rows[message_id].attempts == 1

    def test_render_error_fails_without_trying_the_provider(self, uow: FakeUnitOfWork) -> None:
        message_id = _accept(uow, RecordingQueue())
        # A send without 'name' is refused at the API; here the row lost it since.
        uow.messages.rows[message_id].props = {}
        provider = ScriptedProvider()
        assert self._deliver(uow, provider, message_id) is DeliveryResult.FAILED
        stored = uow.messages.rows[message_id]
        assert stored.last_error is not None
        assert stored.last_error.startswith("missing_prop")
        assert provider.sent == []

    def test_a_stored_subject_over_the_limit_fails_without_trying_the_provider(
        self, uow: FakeUnitOfWork
    ) -> None:
        message_id = _accept(uow, RecordingQueue())
        # A row written before the send API refused these
        uow.messages.rows[message_id].subject = "x" * 999
        provider = ScriptedProvider()
        assert self._deliver(uow, provider, message_id) is DeliveryResult.FAILED
        stored = uow.messages.rows[message_id]
        assert stored.last_error is not None
        assert stored.last_error.startswith("subject_too_long")
        assert provider.sent == []

    def test_a_deferred_refusal_is_retried_later(self, uow: FakeUnitOfWork) -> None:
        message_id = _accept(uow, RecordingQueue())
        provider = ScriptedProvider(FailureKind.DEFERRED)
        assert self._deliver(uow, provider, message_id) is DeliveryResult.RETRY
        stored = uow.messages.rows[message_id]
        assert stored.status is MessageStatus.QUEUED
        assert stored.last_error is not None
        assert stored.last_error.startswith("deferred:")
        assert self._deliver(uow, provider, message_id) is DeliveryResult.SENT

    def test_missing_row_is_reported(self, uow: FakeUnitOfWork) -> None:
        assert self._deliver(uow, ScriptedProvider(), uuid.uuid4()) is DeliveryResult.MISSING


class TestMessageHistory:
    def test_only_the_owner_sees_a_message(self, uow: FakeUnitOfWork) -> None:
        message_id = _accept(uow, RecordingQueue())
        owner = uow.messages.rows[message_id].client_id
        history = status.message_history(uow, client_id=owner, message_id=str(message_id))
        assert history.message.id == message_id
        with pytest.raises(MessageNotFound):
            status.message_history(uow, client_id=uuid.uuid4(), message_id=str(message_id))
        with pytest.raises(MessageNotFound):
            status.message_history(uow, client_id=owner, message_id="not-a-uuid")
