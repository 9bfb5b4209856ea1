"""In-memory fakes of the delivery-feedback repositories and webhook collaborators."""

from __future__ import annotations

import builtins
import copy
import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailroom.adapters.db.feedback_repositories import (
    FeedbackRepository,
    MessageFilter,
    MessageQueryRepository,
    MessageState,
    RecipientRepository,
    SuppressionFilter,
    SuppressionRepository,
)
from mailroom.adapters.db.repositories import MessageRepository
from mailroom.adapters.webhooks.fetch import AwsHttpsFetcher
from mailroom.adapters.webhooks.replay import ReplayGuard
from mailroom.domain.errors import DependencyUnavailable
from mailroom.domain.feedback import (
    RECIPIENT_RANK,
    DeliveryEvent,
    RecipientOutcome,
    Suppression,
    SuppressionScope,
)
from mailroom.domain.model import Message, MessageStatus


@dataclass
class StoredEvent:
    event: DeliveryEvent
    message_id: uuid.UUID | None


@dataclass
class FeedbackState:
    """Everything the four fakes hold, so the unit of work can snapshot it in one go."""

    events: list[StoredEvent] = field(default_factory=list)
    recipients: dict[tuple[uuid.UUID, str], RecipientOutcome] = field(default_factory=dict)
    suppressions: dict[tuple[uuid.UUID | None, str], Suppression] = field(default_factory=dict)
    next_suppression_id: int = 1

    def snapshot(self) -> FeedbackState:
        return copy.deepcopy(self)

    def restore(self, saved: FeedbackState) -> None:
        restored = copy.deepcopy(saved)
        self.events = restored.events
        self.recipients = restored.recipients
        self.suppressions = restored.suppressions
        self.next_suppression_id = restored.next_suppression_id


class FakeFeedbackRepository(FeedbackRepository):
    def __init__(self, state: FeedbackState, messages: MessageRepository) -> None:
        self._state = state
        self._messages = messages

    def _rows(self) -> dict[uuid.UUID, Message]:
        rows: dict[uuid.UUID, Message] = self._messages.rows  # type: ignore[attr-defined]
        return rows

    def add(self, event: DeliveryEvent, *, message_id: uuid.UUID | None) -> bool:
        key = (event.provider, event.event_id, event.recipient_address or "")
        if any(
            (s.event.provider, s.event.event_id, s.event.recipient_address or "") == key
            for s in self._state.events
        ):
            return False
        self._state.events.append(StoredEvent(event, message_id))
        return True

    def find_message_id(self, provider: str, provider_msg_ids: list[str]) -> uuid.UUID | None:
        return next(
            (
                m.id
                for m in self._rows().values()
                if m.provider == provider and m.provider_msg_id in provider_msg_ids
            ),
            None,
        )

    def claim_orphans(
        self, provider: str, provider_msg_ids: list[str], message_id: uuid.UUID
    ) -> list[DeliveryEvent]:
        claimed = []
        for stored in self._state.events:
            if (
                stored.message_id is None
                and stored.event.provider == provider
                and stored.event.message_id in provider_msg_ids
            ):
                stored.message_id = message_id
                claimed.append(stored.event)
        return claimed

    def advance_status(
        self, message_id: uuid.UUID, target: MessageStatus, allowed_from: list[MessageStatus]
    ) -> bool:
        row = self._rows().get(message_id)
        if row is None or row.status not in allowed_from:
            return False
        row.status = target
        row.updated_at = datetime.now(UTC)
        return True

    def for_message(self, message_id: uuid.UUID) -> list[DeliveryEvent]:
        return [s.event for s in self._state.events if s.message_id == message_id]

    def message_states(self, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, MessageState]:
        rows = self._rows()
        return {
            m: MessageState(m, rows[m].status, rows[m].client_id, rows[m].is_test)
            for m in message_ids
            if m in rows
        }

    def count_orphans(self) -> int:
        return sum(1 for s in self._state.events if s.message_id is None)

    @property
    def stored(self) -> list[StoredEvent]:
        return self._state.events


class FakeRecipientRepository(RecipientRepository):
    def __init__(self, state: FeedbackState) -> None:
        self._state = state

    def add_all(self, message_id: uuid.UUID, recipients: list[tuple[str, str]]) -> None:
        for address, kind in recipients:
            self._state.recipients.setdefault(
                (message_id, address), RecipientOutcome(address=address, status=None, kind=kind)
            )

    def record(self, message_id: uuid.UUID, outcome: RecipientOutcome) -> bool:
        assert outcome.status is not None
        existing = self._state.recipients.get((message_id, outcome.address))
        rank = RECIPIENT_RANK[existing.status] if existing and existing.status else 0
        if (
            existing is not None
            and existing.status is not None
            and rank >= RECIPIENT_RANK[outcome.status]
        ):
            return False
        kind = existing.kind if existing else outcome.kind
        self._state.recipients[(message_id, outcome.address)] = dataclasses.replace(
            outcome, kind=kind, updated_at=datetime.now(UTC)
        )
        return True

    def for_message(self, message_id: uuid.UUID) -> list[RecipientOutcome]:
        return sorted(
            (o for (owner, _), o in self._state.recipients.items() if owner == message_id),
            key=lambda o: o.address,
        )


class FakeSuppressionRepository(SuppressionRepository):
    def __init__(self, state: FeedbackState) -> None:
        self._state = state

    def upsert(self, suppression: Suppression) -> Suppression:
        key = (suppression.client_id, suppression.address)
        now = datetime.now(UTC)
        existing = self._state.suppressions.get(key)
        if existing is None:
            stored = dataclasses.replace(
                suppression, id=self._state.next_suppression_id, created_at=now, updated_at=now
            )
            self._state.next_suppression_id += 1
        else:
            stored = dataclasses.replace(
                existing,
                reason=suppression.reason,
                source=suppression.source,
                note=suppression.note or existing.note,
                expires_at=suppression.expires_at,
                updated_at=now,
            )
        self._state.suppressions[key] = stored
        return dataclasses.replace(stored)

    def active_for(
        self,
        client_id: uuid.UUID,
        addresses: list[str],
        now: datetime,
        *,
        include_test: bool = False,
    ) -> list[Suppression]:
        return [
            dataclasses.replace(s)
            for s in self._state.suppressions.values()
            if s.address in addresses
            and s.client_id in (None, client_id)
            and s.is_active(now)
            and (include_test or not s.is_test)
        ]

    def remove(self, address: str, client_id: uuid.UUID | None) -> int:
        return 1 if self._state.suppressions.pop((client_id, address), None) else 0

    def list(
        self, where: SuppressionFilter, *, now: datetime, after_id: int | None, limit: int
    ) -> list[Suppression]:
        def wanted(s: Suppression) -> bool:
            if where.visible_to is not None:
                if s.client_id is None:
                    visible = where.reason is None and s.is_active(now)
                else:
                    visible = s.client_id == where.visible_to and (
                        where.include_expired or s.is_active(now)
                    )
                return (
                    visible
                    and (not where.address or s.address == where.address)
                    and (where.reason is None or s.reason is where.reason)
                    and (after_id is None or (s.id or 0) > after_id)
                )
            if where.scope is SuppressionScope.GLOBAL and s.client_id is not None:
                return False
            if where.scope is SuppressionScope.CLIENT and (
                s.client_id is None or (where.client_id and s.client_id != where.client_id)
            ):
                return False
            return (
                (not where.address or s.address == where.address)
                and (where.reason is None or s.reason is where.reason)
                and (where.include_expired or s.is_active(now))
                and (after_id is None or (s.id or 0) > after_id)
            )

        found = sorted(
            (s for s in self._state.suppressions.values() if wanted(s)), key=lambda s: s.id or 0
        )
        return [dataclasses.replace(s) for s in found[:limit]]

    @property
    def entries(self) -> builtins.list[Suppression]:
        return list(self._state.suppressions.values())


class FakeMessageQueryRepository(MessageQueryRepository):
    def __init__(self, state: FeedbackState, messages: MessageRepository) -> None:
        self._state = state
        self._messages = messages

    def list_for_client(
        self,
        client_id: uuid.UUID,
        where: MessageFilter,
        *,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Message]:
        rows: dict[uuid.UUID, Message] = self._messages.rows  # type: ignore[attr-defined]

        def wanted(m: Message) -> bool:
            created = m.created_at or datetime.min.replace(tzinfo=UTC)
            recipients = {a for (owner, a) in self._state.recipients if owner == m.id}
            return (
                m.client_id == client_id
                and (where.status is None or m.status is where.status)
                and (where.since is None or created >= where.since)
                and (where.until is None or created < where.until)
                and (not where.recipient or where.recipient in recipients)
                and (before is None or (created, m.id) < before)
            )

        found = sorted(
            (m for m in rows.values() if wanted(m)),
            key=lambda m: (m.created_at or datetime.min.replace(tzinfo=UTC), m.id),
            reverse=True,
        )
        return [copy.deepcopy(m) for m in found[:limit]]


class StaticFetcher(AwsHttpsFetcher):
    """Serves the bodies a test put in ``files``; records every URL it was asked for."""

    def __init__(self, files: dict[str, bytes] | None = None, *, down: bool = False) -> None:
        self.files = dict(files or {})
        self.down = down
        self.fetched: list[str] = []

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if self.down:
            raise DependencyUnavailable(f"could not fetch {url}")
        return self.files.get(url, b"<ConfirmSubscriptionResponse/>")


class MemoryReplayGuard(ReplayGuard):
    def __init__(self) -> None:
        self.claimed: dict[str, int] = {}

    def claim(self, key: str, ttl_seconds: int) -> bool:
        if key in self.claimed:
            return False
        self.claimed[key] = ttl_seconds
        return True

    def release(self, key: str) -> None:
        self.claimed.pop(key, None)


class FixedClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
