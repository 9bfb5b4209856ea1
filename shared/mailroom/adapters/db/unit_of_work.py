"""The unit of work: one transaction, explicit commits, rollback on exit."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from mailroom.adapters.db.accepted_insert import insert_accepted, insert_accepted_many
from mailroom.adapters.db.analytics import SqlAnalyticsRepository
from mailroom.adapters.db.api_keys import ApiKeyRepository, SqlApiKeyRepository
from mailroom.adapters.db.audit import AuditLog, SqlAuditLog
from mailroom.adapters.db.batches import SqlBatchRepository
from mailroom.adapters.db.feedback_repositories import (
    FeedbackRepository,
    MessageQueryRepository,
    RecipientRepository,
    SqlFeedbackRepository,
    SqlMessageQueryRepository,
    SqlRecipientRepository,
    SqlSuppressionRepository,
    SuppressionRepository,
)
from mailroom.adapters.db.idempotency import IdempotencyRepository, SqlIdempotencyRepository
from mailroom.adapters.db.inbound_repositories import (
    InboundMailRepository,
    SqlInboundMailRepository,
)
from mailroom.adapters.db.outbound_webhooks import SqlWebhookRepository
from mailroom.adapters.db.queues import SqlQueueRepository
from mailroom.adapters.db.repositories import (
    ClientRepository,
    MessageRepository,
    SqlClientRepository,
    SqlMessageRepository,
)
from mailroom.adapters.db.scheduling import (
    ScheduledMessageRepository,
    ScheduleRepository,
    SqlScheduledMessageRepository,
    SqlScheduleRepository,
)
from mailroom.adapters.db.sending_domains import (
    SendingDomainRepository,
    SqlSendingDomainRepository,
)
from mailroom.adapters.db.smtp_configs import SmtpConfigRepository, SqlSmtpConfigRepository
from mailroom.domain.feedback import Suppression
from mailroom.domain.model import EventType, Message


class UnitOfWork(abc.ABC):
    clients: ClientRepository
    api_keys: ApiKeyRepository
    messages: MessageRepository
    feedback: FeedbackRepository
    recipients: RecipientRepository
    suppressions: SuppressionRepository
    message_queries: MessageQueryRepository
    audit: AuditLog
    idempotency: IdempotencyRepository
    # Issue 16; only the inbound function and the unsubscribe routes use it.
    inbound: InboundMailRepository
    sending_domains: SendingDomainRepository
    # Outbound webhooks (issue 19) live in PostgreSQL only: the outbox is a
    # trigger there, so no in-memory double could stand in for it honestly.
    webhooks: SqlWebhookRepository
    # Bulk batches (issue 17): PostgreSQL only (the planner's chunk is one
    # statement of its own); the in-memory fakes have none.
    batches: SqlBatchRepository
    # Issue 18 (PostgreSQL only: the in-memory fakes do not schedule).
    scheduled: ScheduledMessageRepository
    schedules: ScheduleRepository
    # Issue 20: clients' own SMTP relays.
    smtp_configs: SmtpConfigRepository
    # Issue 20; PostgreSQL only (the send path uses it when routing is wired).
    queues: SqlQueueRepository
    # Issue 21: analytics rollups and reputation states; PostgreSQL only (the
    # rollups are fed by a trigger there).
    analytics: SqlAnalyticsRepository

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Whatever was not committed explicitly is thrown away.
        self.rollback()

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...

    def add_accepted(
        self, message: Message, detail: dict[str, Any], recipients: list[tuple[str, str]]
    ) -> None:
        """The message, its ``accepted`` event and its recipient rows (bare address, kind).

        PostgreSQL does it in one statement (``SqlUnitOfWork``); this default
        is the same three writes, for the in-memory fakes.
        """
        self.messages.add(message)
        self.messages.append_event(message.id, EventType.ACCEPTED, detail)
        self.recipients.add_all(message.id, recipients)

    def add_accepted_many(
        self, accepted: Sequence[tuple[Message, dict[str, Any], list[tuple[str, str]]]]
    ) -> None:
        """``add_accepted`` for each (message, event detail, recipients) of a batch.

        PostgreSQL does it in one statement whatever their number (issue 17).
        """
        for message, detail, recipients in accepted:
            self.add_accepted(message, detail, recipients)

    def add_accepted_unless_suppressed(
        self, message: Message, detail: dict[str, Any], recipients: list[tuple[str, str]]
    ) -> list[Suppression]:
        """``add_accepted``, unless a recipient has an active suppression.

        Then nothing is written and the suppressions come back, for the
        caller to screen the recipients and write what is left. PostgreSQL
        checks and writes in one statement; this default does it in two.
        """
        active = self.suppressions.active_for(
            message.client_id,
            _addresses(recipients),
            datetime.now(UTC),
            include_test=message.is_test,
        )
        if active:
            return active
        self.add_accepted(message, detail, recipients)
        return []


def _addresses(recipients: list[tuple[str, str]]) -> list[str]:
    """The distinct bare addresses of (bare address, kind) recipient pairs."""
    return sorted({address for address, _ in recipients})


class Database:
    """Owns the engine, created on first use so importing a handler costs no connection."""

    def __init__(self, url: str, *, pool_size: int = 1, max_overflow: int = 2) -> None:
        self._url = url
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            # pg8000 pays ~70 ms of pure-Python SCRAM per new connection, so keep
            # them pooled for the life of the container. Every checkout is
            # tested (the database may have restarted between invocations),
            # but by the BEGIN the transaction needs anyway, not a SELECT 1.
            self._engine = create_engine(
                self._url,
                pool_size=self._pool_size,
                max_overflow=self._max_overflow,
                pool_recycle=300,
            )
            # Imported here: pg8000 itself is only loaded with the first engine.
            from mailroom.adapters.db import pg8000_statements

            pg8000_statements.install()
            pg8000_statements.use_simple_transaction_commands(self._engine.dialect)
            event.listen(self._engine, "connect", pg8000_statements.on_connect)
            event.listen(self._engine, "checkout", _begin_or_replace)
        return self._engine

    def session(self) -> Session:
        if self._sessions is None:
            self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        return self._sessions()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._sessions = None


def _begin_or_replace(dbapi_connection: Any, record: object, proxy: object) -> None:
    """Open the transaction at checkout: the liveness test and the BEGIN in one round trip.

    SQLAlchemy's pre-ping sent BEGIN and SELECT 1, then the first statement
    ran in that transaction: one round trip of every transaction was the
    ping's (issue 8). pg8000 tracks the transaction from the server's
    answer, so the first statement then sends no BEGIN of its own. A dead
    connection raises DisconnectionError, on which the pool replaces it and
    checks out again. This engine is never switched to autocommit (that
    would leave this transaction open).
    """
    if dbapi_connection.autocommit or dbapi_connection._in_transaction:
        return
    try:
        dbapi_connection.execute_simple("begin transaction")
    except Exception as error:
        # Whatever failed (a socket error, a server shutting down), this
        # connection is not worth keeping.
        raise DisconnectionError(f"pooled connection failed its BEGIN: {error!r}") from error


class SqlUnitOfWork(UnitOfWork):
    def __init__(self, database: Database) -> None:
        self._database = database
        self._session: Session | None = None

    def __enter__(self) -> Self:
        self._session = self._database.session()
        self.clients = SqlClientRepository(self._session)
        self.api_keys = SqlApiKeyRepository(self._session)
        self.messages = SqlMessageRepository(self._session)
        self.feedback = SqlFeedbackRepository(self._session)
        self.recipients = SqlRecipientRepository(self._session)
        self.suppressions = SqlSuppressionRepository(self._session)
        self.message_queries = SqlMessageQueryRepository(self._session)
        self.audit = SqlAuditLog(self._session)
        self.idempotency = SqlIdempotencyRepository(self._session)
        self.inbound = SqlInboundMailRepository(self._session)
        self.sending_domains = SqlSendingDomainRepository(self._session)
        self.webhooks = SqlWebhookRepository(self._session)
        self.batches = SqlBatchRepository(self._session)
        self.scheduled = SqlScheduledMessageRepository(self._session)
        self.schedules = SqlScheduleRepository(self._session)
        self.smtp_configs = SqlSmtpConfigRepository(self._session)
        self.queues = SqlQueueRepository(self._session)
        self.analytics = SqlAnalyticsRepository(self._session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, traceback)
        if self._session is not None:
            self._session.close()
            self._session = None

    def commit(self) -> None:
        assert self._session is not None, "commit outside 'with uow:'"
        self._session.commit()

    def add_accepted(
        self, message: Message, detail: dict[str, Any], recipients: list[tuple[str, str]]
    ) -> None:
        assert self._session is not None, "add_accepted outside 'with uow:'"
        insert_accepted(self._session, message, detail, recipients)

    def add_accepted_many(
        self, accepted: Sequence[tuple[Message, dict[str, Any], list[tuple[str, str]]]]
    ) -> None:
        assert self._session is not None, "add_accepted_many outside 'with uow:'"
        if accepted:
            insert_accepted_many(self._session, accepted)

    def add_accepted_unless_suppressed(
        self, message: Message, detail: dict[str, Any], recipients: list[tuple[str, str]]
    ) -> list[Suppression]:
        assert self._session is not None, "add_accepted_unless_suppressed outside 'with uow:'"
        return insert_accepted(
            self._session, message, detail, recipients, screened=_addresses(recipients)
        )

    def rollback(self) -> None:
        if self._session is not None:
            self._session.rollback()
