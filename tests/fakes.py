"""Small in-memory fakes that subclass Mailroom's real interfaces, for unit tests."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from mailroom.adapters.db.repositories import ClientRepository, MessageRepository
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.providers.base import (
    EmailProvider,
    FailureKind,
    ProviderError,
    ProviderReceipt,
)
from mailroom.adapters.queue import MessageQueue
from mailroom.adapters.secrets import SecretHasher
from mailroom.adapters.templates import TemplateSource, TemplateStore
from mailroom.domain.errors import DependencyUnavailable, UnknownTemplate
from mailroom.domain.mime import OutgoingEmail
from mailroom.domain.model import Client, EventType, Message, MessageEvent


class FakeClientRepository(ClientRepository):
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Client] = {}

    def add(self, client: Client) -> None:
        self.rows[client.id] = client

    def get(self, client_id: uuid.UUID) -> Client | None:
        return self.rows.get(client_id)

    def get_by_api_key(self, api_key: str) -> Client | None:
        return next((c for c in self.rows.values() if c.api_key_prefix == api_key), None)


class FakeMessageRepository(MessageRepository):
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Message] = {}
        self.event_rows: list[tuple[uuid.UUID, MessageEvent]] = []

    def add(self, message: Message) -> None:
        message.created_at = message.created_at or datetime.now(UTC)
        self.rows[message.id] = _copy(message)

    def get(self, message_id: uuid.UUID) -> Message | None:
        row = self.rows.get(message_id)
        return _copy(row) if row else None

    def save_outcome(self, message: Message) -> None:
        self.rows[message.id] = _copy(message)

    def append_event(
        self, message_id: uuid.UUID, event_type: EventType, detail: dict[str, Any]
    ) -> None:
        self.event_rows.append((message_id, MessageEvent(event_type, datetime.now(UTC), detail)))

    def events(self, message_id: uuid.UUID) -> list[MessageEvent]:
        return [event for owner, event in self.event_rows if owner == message_id]


class FakeUnitOfWork(UnitOfWork):
    """Keeps committed state only: what was not committed is rolled back."""

    clients: FakeClientRepository
    messages: FakeMessageRepository

    def __init__(self) -> None:
        self.clients = FakeClientRepository()
        self.messages = FakeMessageRepository()
        self._snapshot = self._take_snapshot()
        self.commits = 0

    def _take_snapshot(self) -> tuple[Any, ...]:
        return (
            dict(self.clients.rows),
            {k: _copy(v) for k, v in self.messages.rows.items()},
            list(self.messages.event_rows),
        )

    def commit(self) -> None:
        self.commits += 1
        self._snapshot = self._take_snapshot()

    def rollback(self) -> None:
        clients, messages, events = self._snapshot
        self.clients.rows = dict(clients)
        self.messages.rows = {k: _copy(v) for k, v in messages.items()}
        self.messages.event_rows = list(events)


class PlainHasher(SecretHasher):
    """Reversible 'hash' so unit tests don't pay argon2; never used outside tests."""

    def hash(self, secret: str) -> str:
        return "plain$" + secret

    def verify(self, secret_hash: str, secret: str) -> bool:
        return secret_hash == "plain$" + secret


class RecordingQueue(MessageQueue):
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[uuid.UUID, str]] = []

    def enqueue(self, message_id: uuid.UUID, trace_id: str) -> None:
        if self.fail:
            raise DependencyUnavailable("queue is down")
        self.sent.append((message_id, trace_id))


class DictTemplateStore(TemplateStore):
    def __init__(self, *sources: TemplateSource) -> None:
        self.sources = {source.name: source for source in sources}

    def get(self, name: str) -> TemplateSource:
        if name not in self.sources:
            raise UnknownTemplate(f"there is no template named '{name}'")
        return self.sources[name]


class ScriptedProvider(EmailProvider):
    """Answers each send with the next scripted outcome: a receipt or a failure kind."""

    name = "scripted"

    def __init__(self, *outcomes: FailureKind | None) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[OutgoingEmail] = []
        self.closed = False

    def send(self, email: OutgoingEmail) -> ProviderReceipt:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise ProviderError(self.name, outcome, f"scripted {outcome.value} failure")
        self.sent.append(email)
        return ProviderReceipt(self.name, f"scripted-{len(self.sent)}")

    def close(self) -> None:
        self.closed = True


def _copy(message: Message) -> Message:
    return copy.deepcopy(message)
