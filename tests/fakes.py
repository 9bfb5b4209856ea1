"""Small in-memory fakes that subclass Mailroom's real interfaces, for unit tests."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mailroom.adapters.db.api_keys import ApiKeyRepository
from mailroom.adapters.db.audit import AuditLog
from mailroom.adapters.db.repositories import ClientRepository, MessageRepository
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.inline_content import InlineContentStore
from mailroom.adapters.providers.base import (
    EmailProvider,
    FailureKind,
    ProviderError,
    ProviderReceipt,
)
from mailroom.adapters.queue import MessageQueue
from mailroom.adapters.secrets import SecretHasher
from mailroom.adapters.templates import AuditFor, TemplateSource, TemplateStore
from mailroom.adapters.tenancy import (
    Bucket,
    CredentialVersions,
    QuotaCounter,
    QuotaTake,
    RateLimiter,
)
from mailroom.domain.api_keys import ApiKey
from mailroom.domain.errors import ClientNameTaken, DependencyUnavailable, UnknownTemplate
from mailroom.domain.mime import OutgoingEmail
from mailroom.domain.model import (
    Client,
    ClientStatus,
    EventType,
    Message,
    MessageEvent,
    MessageStatus,
)
from mailroom.domain.personalization import InlineContent
from mailroom.domain.templates import TemplateVersion
from mailroom.domain.tenancy import AuditEntry, QuotaPeriod, RateDecision
from tests.fakes_feedback import (
    FakeFeedbackRepository,
    FakeMessageQueryRepository,
    FakeRecipientRepository,
    FakeSuppressionRepository,
    FeedbackState,
)
from tests.fakes_reliability import FakeIdempotencyRepository


class FakeClientRepository(ClientRepository):
    """Hands out copies, as the database does: changing one changes nothing until saved."""

    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Client] = {}
        self.key_owners: dict[str, uuid.UUID] = {}

    def add(self, client: Client) -> None:
        self._refuse_a_taken_name(client)
        now = datetime.now(UTC)
        self.rows[client.id] = dataclasses.replace(client, created_at=now, updated_at=now)

    def _refuse_a_taken_name(self, client: Client) -> None:
        # The unique index on lower(name) that the real table has.
        if any(
            c.name.lower() == client.name.lower() and c.id != client.id for c in self.rows.values()
        ):
            raise ClientNameTaken(
                f"a client named {client.name!r} exists already",
                details=[{"field": "name", "message": "taken by another client"}],
            )

    def get(self, client_id: uuid.UUID) -> Client | None:
        row = self.rows.get(client_id)
        return copy.deepcopy(row) if row else None

    def get_by_api_key(self, api_key: str) -> Client | None:
        # Any of the client's keys names it (FakeApiKeyRepository registers them here).
        client_id = self.key_owners.get(api_key)
        row = self.rows.get(client_id) if client_id else None
        row = row or next((c for c in self.rows.values() if c.api_key_prefix == api_key), None)
        return copy.deepcopy(row) if row else None

    def list(self, status: ClientStatus | None = None) -> list[Client]:
        return [
            copy.deepcopy(c) for c in self.rows.values() if status is None or c.status is status
        ]

    def save(self, client: Client) -> None:
        self._refuse_a_taken_name(client)
        self.rows[client.id] = dataclasses.replace(client, updated_at=datetime.now(UTC))

    def touch_last_used(self, client_id: uuid.UUID, at: datetime) -> None:
        row = self.rows[client_id]
        if row.last_used_at is None or row.last_used_at < at:
            self.rows[client_id] = dataclasses.replace(row, last_used_at=at)


class FakeMessageRepository(MessageRepository):
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Message] = {}
        self.event_rows: list[tuple[uuid.UUID, MessageEvent]] = []
        # Worker claims: who holds each claimed message (the claim_token column).
        self.claim_tokens: dict[uuid.UUID, uuid.UUID] = {}
        # Stands in for the database clock in claims and leases.
        self.now: datetime | None = None

    def _now(self) -> datetime:
        return self.now or datetime.now(UTC)

    def _takeable(self, message: Message) -> bool:
        if message.status is MessageStatus.QUEUED:
            return True
        return (
            message.status is MessageStatus.SENDING
            and message.lease_expires_at is not None
            and message.lease_expires_at < self._now()
        )

    def claim(
        self, message_ids: Sequence[uuid.UUID], token: uuid.UUID, lease_seconds: int
    ) -> list[Message]:
        taken: list[Message] = []
        for message_id in dict.fromkeys(message_ids):
            row = self.rows.get(message_id)
            if row is None or not self._takeable(row):
                continue
            row.status = MessageStatus.SENDING
            row.lease_expires_at = self._now() + timedelta(seconds=lease_seconds)
            row.claims += 1
            row.updated_at = self._now()
            self.claim_tokens[message_id] = token
            taken.append(_copy(row))
        return taken

    def record_outcomes(self, token: uuid.UUID, messages: Sequence[Message]) -> set[uuid.UUID]:
        written: set[uuid.UUID] = set()
        for message in messages:
            if self.claim_tokens.get(message.id) != token:
                continue
            stored = _copy(message)
            stored.lease_expires_at = None
            stored.claims = self.rows[message.id].claims
            stored.updated_at = self._now()
            self.rows[message.id] = stored
            del self.claim_tokens[message.id]
            written.add(message.id)
        return written

    def append_events(self, events: Sequence[tuple[uuid.UUID, EventType, dict[str, Any]]]) -> None:
        for message_id, event_type, detail in events:
            self.append_event(message_id, event_type, detail)

    def oldest_unfinished_at(self) -> datetime | None:
        return min(
            (
                m.created_at
                for m in self.rows.values()
                if m.created_at is not None
                and m.status in (MessageStatus.QUEUED, MessageStatus.SENDING)
            ),
            default=None,
        )

    def sent_since(self, since: datetime, limit: int) -> list[uuid.UUID]:
        sent = [m for m in self.rows.values() if m.sent_at is not None and m.sent_at >= since]
        sent.sort(key=lambda m: m.sent_at or since)
        return [m.id for m in sent[:limit]]

    def unfinished(self, older_than: datetime, limit: int) -> list[Message]:
        rows = [
            m
            for m in self.rows.values()
            if m.status in (MessageStatus.QUEUED, MessageStatus.SENDING)
            and (m.updated_at or m.created_at or self._now()) < older_than
        ]
        rows.sort(key=lambda m: m.updated_at or m.created_at or self._now())
        return [_copy(m) for m in rows[:limit]]

    def requeue_stale(
        self, message_ids: Sequence[uuid.UUID], older_than: datetime
    ) -> list[uuid.UUID]:
        changed: list[uuid.UUID] = []
        for message_id in message_ids:
            row = self.rows.get(message_id)
            if row is None or not self._takeable(row):
                continue
            if (row.updated_at or row.created_at or self._now()) >= older_than:
                continue
            row.status = MessageStatus.QUEUED
            row.lease_expires_at = None
            row.updated_at = self._now()
            self.claim_tokens.pop(message_id, None)
            changed.append(message_id)
        return changed

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

    def count_accepted(self, client_id: uuid.UUID, start: datetime, end: datetime) -> int:
        def having(event_type: EventType) -> set[uuid.UUID]:
            return {owner for owner, event in self.event_rows if event.type is event_type}

        accepted = having(EventType.ACCEPTED) - having(EventType.ENQUEUE_FAILED)
        return sum(
            1
            for m in self.rows.values()
            if m.client_id == client_id
            and m.created_at is not None
            and start <= m.created_at < end
            and m.id in accepted
        )


class FakeAuditLog(AuditLog):
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def append(self, entry: AuditEntry) -> None:
        seq = len(self.entries) + 1
        self.entries.append(dataclasses.replace(entry, at=datetime.now(UTC), seq=seq))

    def read(
        self, *, target_id: str | None = None, after_seq: int | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        matching = [e for e in self.entries if target_id is None or e.target_id == target_id]
        if after_seq is None:
            return matching[-limit:]
        return [e for e in matching if (e.seq or 0) > after_seq][:limit]


class FakeApiKeyRepository(ApiKeyRepository):
    """Keys by id, handed out as copies; knows the clients for ``get_with_client``."""

    def __init__(self, clients: FakeClientRepository) -> None:
        self.rows: dict[str, ApiKey] = {}
        self._clients = clients
        self.touched: list[tuple[str, datetime]] = []

    def add(self, key: ApiKey) -> None:
        now = datetime.now(UTC)
        self.rows[key.id] = dataclasses.replace(key, created_at=now, updated_at=now)
        self._clients.key_owners[key.id] = key.client_id

    def get(self, key_id: str, *, for_update: bool = False) -> ApiKey | None:
        row = self.rows.get(key_id)
        return copy.deepcopy(row) if row else None

    def get_with_client(self, key_id: str) -> tuple[ApiKey, Client] | None:
        key = self.get(key_id)
        client = self._clients.get(key.client_id) if key else None
        return (key, client) if key and client else None

    def list_for_client(self, client_id: uuid.UUID, *, limit: int) -> list[ApiKey]:
        keys = [copy.deepcopy(k) for k in self.rows.values() if k.client_id == client_id]
        return list(reversed(keys))[:limit]

    def count_active(self, client_id: uuid.UUID, now: datetime) -> int:
        return sum(1 for k in self.rows.values() if k.client_id == client_id and k.active_at(now))

    def active_ids(self, client_id: uuid.UUID) -> list[str]:
        return [
            k.id for k in self.rows.values() if k.client_id == client_id and k.revoked_at is None
        ]

    def save(self, key: ApiKey) -> None:
        self.rows[key.id] = dataclasses.replace(key, updated_at=datetime.now(UTC))

    def touch_last_used(self, key_id: str, client_id: uuid.UUID, at: datetime) -> None:
        self.touched.append((key_id, at))
        row = self.rows[key_id]
        if row.last_used_at is None or row.last_used_at < at:
            self.rows[key_id] = dataclasses.replace(row, last_used_at=at)
        self._clients.touch_last_used(client_id, at)


class FakeUnitOfWork(UnitOfWork):
    """Keeps committed state only: what was not committed is rolled back."""

    clients: FakeClientRepository
    api_keys: FakeApiKeyRepository
    messages: FakeMessageRepository
    feedback: FakeFeedbackRepository
    recipients: FakeRecipientRepository
    suppressions: FakeSuppressionRepository
    message_queries: FakeMessageQueryRepository
    audit: FakeAuditLog
    idempotency: FakeIdempotencyRepository

    def __init__(self) -> None:
        self.clients = FakeClientRepository()
        self.api_keys = FakeApiKeyRepository(self.clients)
        self.messages = FakeMessageRepository()
        self.audit = FakeAuditLog()
        # Delivery feedback: four repositories over one state, saved and
        # restored alongside the rest.
        self.feedback_state = FeedbackState()
        self.feedback = FakeFeedbackRepository(self.feedback_state, self.messages)
        self.recipients = FakeRecipientRepository(self.feedback_state)
        self.suppressions = FakeSuppressionRepository(self.feedback_state)
        self.message_queries = FakeMessageQueryRepository(self.feedback_state, self.messages)
        self.idempotency = FakeIdempotencyRepository()
        self._keys_saved = self.idempotency.snapshot()
        self._feedback_saved = self.feedback_state.snapshot()
        self._snapshot = self._take_snapshot()
        self.commits = 0

    def _take_snapshot(self) -> tuple[Any, ...]:
        return (
            dict(self.clients.rows),
            {k: _copy(v) for k, v in self.messages.rows.items()},
            list(self.messages.event_rows),
            list(self.audit.entries),
            dict(self.api_keys.rows),
        )

    def commit(self) -> None:
        self.commits += 1
        self._snapshot = self._take_snapshot()
        self._feedback_saved = self.feedback_state.snapshot()
        self._keys_saved = self.idempotency.snapshot()

    def rollback(self) -> None:
        self.feedback_state.restore(self._feedback_saved)
        self.idempotency.keys = dict(self._keys_saved)
        clients, messages, events, audit, keys = self._snapshot
        self.clients.rows = dict(clients)
        self.api_keys.rows = dict(keys)
        self.messages.rows = {k: _copy(v) for k, v in messages.items()}
        self.messages.event_rows = list(events)
        self.audit.entries = list(audit)


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
    """Templates in memory; uploads keep every version per (name, owner), as PostgreSQL does.

    ``sources`` stand for file templates: every client's, found first.
    """

    def __init__(self, *sources: TemplateSource) -> None:
        self.sources = {source.name: source for source in sources}
        self.uploads: dict[tuple[str, uuid.UUID | None], list[TemplateSource]] = {}
        # What a store with an audit log would have appended with each upload.
        self.audited: list[AuditEntry] = []

    def get(
        self, name: str, version: int | None = None, *, client_id: uuid.UUID | None = None
    ) -> TemplateSource:
        if name in self.sources:
            if version is not None:
                raise UnknownTemplate(f"'{name}' is a file template: it has no versions to pin")
            return self.sources[name]
        owner = client_id if client_id is not None and (name, client_id) in self.uploads else None
        return self._version(name, version, owner)

    def get_exact(self, name: str, version: int, *, owner: uuid.UUID | None) -> TemplateSource:
        return self._version(name, version, owner)

    def _version(self, name: str, version: int | None, owner: uuid.UUID | None) -> TemplateSource:
        versions = self.uploads.get((name, owner))
        if versions and (version is None or 1 <= version <= len(versions)):
            return versions[(version or len(versions)) - 1]
        raise UnknownTemplate(f"there is no template named '{name}'")

    def versions(self, *, client_id: uuid.UUID | None = None) -> list[TemplateVersion]:
        return [
            TemplateVersion(name, "uploaded", n + 1, owner=owner)
            for (name, owner), versions in sorted(self.uploads.items(), key=lambda i: i[0][0])
            for n in range(len(versions))
            if client_id is None or owner == client_id
        ]

    def add_version(
        self,
        source: TemplateSource,
        *,
        owner: uuid.UUID | None = None,
        audit: AuditFor | None = None,
    ) -> int:
        versions = self.uploads.setdefault((source.name, owner), [])
        versions.append(dataclasses.replace(source, version=len(versions) + 1, owner=owner))
        if audit is not None:
            self.audited.append(audit(len(versions)))
        return len(versions)


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


class FakeRateLimiter(RateLimiter):
    """Full buckets that never refill: the first ``per_minute`` takes pass, the rest wait."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.taken: dict[str, int] = {}
        self.calls: list[list[Bucket]] = []

    def take_all(self, buckets: Sequence[Bucket], *, cost: int = 1) -> RateDecision:
        if self.down:
            raise DependencyUnavailable("Redis is unavailable: rate limits cannot be checked")
        self.calls.append(list(buckets))
        allowed = all(self.taken.get(b.name, 0) + cost <= b.per_minute for b in buckets)
        if allowed:
            for b in buckets:
                self.taken[b.name] = self.taken.get(b.name, 0) + cost
        decisions = []
        for bucket in buckets:
            used = self.taken.get(bucket.name, 0)
            decisions.append(
                RateDecision(
                    allowed=allowed,
                    limit=bucket.per_minute,
                    remaining=max(0, bucket.per_minute - used),
                    reset_seconds=60 * used // bucket.per_minute,
                    retry_after_seconds=0 if allowed else 60 // bucket.per_minute or 1,
                    level=bucket.level,
                )
            )
        return min(decisions, key=lambda d: (d.remaining, d.limit))


class FakeQuotaCounter(QuotaCounter):
    def __init__(self) -> None:
        self.counters: dict[tuple[uuid.UUID, str], int] = {}

    def take(self, client_id: uuid.UUID, period: QuotaPeriod, limit: int) -> QuotaTake | None:
        key = (client_id, period.label)
        if key not in self.counters:
            return None
        if self.counters[key] >= limit:
            return QuotaTake(accepted=False, used=self.counters[key])
        self.counters[key] += 1
        return QuotaTake(accepted=True, used=self.counters[key])

    def give_back(self, client_id: uuid.UUID, period: QuotaPeriod) -> None:
        key = (client_id, period.label)
        self.counters[key] = max(0, self.counters.get(key, 0) - 1)

    def seed(self, client_id: uuid.UUID, period: QuotaPeriod, used: int) -> None:
        self.counters.setdefault((client_id, period.label), used)

    def read(self, client_id: uuid.UUID, period: QuotaPeriod) -> int | None:
        return self.counters.get((client_id, period.label))

    def replace(
        self, client_id: uuid.UUID, period: QuotaPeriod, *, expected: int | None, used: int
    ) -> bool:
        if self.counters.get((client_id, period.label)) != expected:
            return False
        self.counters[(client_id, period.label)] = used
        return True


class FakeCredentialVersions(CredentialVersions):
    def __init__(self) -> None:
        self.versions: dict[str, str] = {}
        self.reads = 0

    def read(self, api_key: str) -> str | None:
        self.reads += 1
        return self.versions.get(api_key)

    def claim(self, api_key: str) -> str | None:
        if api_key in self.versions:
            return None
        self.versions[api_key] = uuid.uuid4().hex
        return self.versions[api_key]

    def bump(self, api_key: str) -> None:
        self.versions[api_key] = uuid.uuid4().hex


class CountingHasher(PlainHasher):
    """PlainHasher that counts verifications: what the credential cache saves."""

    def __init__(self) -> None:
        self.verifications = 0
        self.burned = 0

    def verify(self, secret_hash: str, secret: str) -> bool:
        self.verifications += 1
        return super().verify(secret_hash, secret)

    def burn_time(self, secret: str) -> None:
        self.burned += 1


def _copy(message: Message) -> Message:
    return copy.deepcopy(message)


class InMemoryInlineContentStore(InlineContentStore):
    """Inline contents in a dict, as PostgreSQL keeps them by hash."""

    def __init__(self) -> None:
        self.contents: dict[str, InlineContent] = {}
        self.saves = 0

    def save(self, content: InlineContent) -> None:
        self.saves += 1
        self.contents.setdefault(content.template_name, content)

    def get(self, name: str) -> TemplateSource | None:
        content = self.contents.get(name)
        return content.source if content is not None else None
