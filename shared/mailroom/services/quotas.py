"""Monthly quotas and daily limits: counted when a message is accepted, reconcilable.

The counter lives in Redis so that every instance checks and counts in one
atomic step. The messages table is the truth it is reconciled against: a
message counts when its row was written in the month (``created_at``), unless
its enqueue failed (the caller got 503 and the charge was given back).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.tenancy import QuotaCounter
from mailroom.domain.errors import DailyLimitExceeded, DependencyUnavailable, QuotaExceeded
from mailroom.domain.model import Client
from mailroom.domain.tenancy import Actor, AuditEntry, QuotaPeriod, QuotaUsage
from mailroom.services.clients import find_client, list_clients

log = logging.getLogger(__name__)

# Reconciling retries this often when sends change the counter under it.
RECONCILE_ATTEMPTS = 3


def count_accepted(uow: UnitOfWork, client_id: uuid.UUID, period: QuotaPeriod) -> int:
    with uow:
        return uow.messages.count_accepted(client_id, period.start, period.end)


class QuotaCharge:
    """One send's charge against its client's quota: taken just before the row is
    written, given back if the message ends up not accepted.

    Use as a context manager around the send; pass ``take`` to
    ``accept_message`` so that invalid requests never touch the counter.
    """

    def __init__(
        self,
        counter: QuotaCounter,
        uow: Callable[[], UnitOfWork],
        client: Client,
        *,
        now: datetime | None = None,
    ) -> None:
        self._counter = counter
        self._uow = uow
        self._client = client
        self._now = now or datetime.now(UTC)
        self.period = QuotaPeriod.containing(self._now)
        self.day = QuotaPeriod.day_containing(self._now)
        self.taken = False
        self._taken: list[QuotaPeriod] = []

    def take(self) -> None:
        """Count this message, or raise QuotaExceeded / DailyLimitExceeded if a limit is used up.

        The daily limit (when the client has one) is taken first and given
        back if the monthly quota then refuses, so a refusal counts nowhere.
        """
        client = self._client
        if client.daily_limit is not None:
            self._take(self.day, client.daily_limit)
        try:
            self._take(self.period, client.quota_limit)
        except BaseException:
            self._give_back_all()
            raise
        self.taken = True

    def _take(self, period: QuotaPeriod, limit: int) -> None:
        client = self._client
        answer = self._counter.take(client.id, period, limit)
        if answer is None:
            # First send of the period, or Redis lost the counter: start it from
            # the messages table rather than from zero.
            self._counter.seed(client.id, period, count_accepted(self._uow(), client.id, period))
            answer = self._counter.take(client.id, period, limit)
            if answer is None:
                raise DependencyUnavailable("the quota counter could not be started")
        if not answer.accepted:
            resets_at = period.end.isoformat().replace("+00:00", "Z")
            retry = period.seconds_until_end(self._now)
            if period.is_day:
                raise DailyLimitExceeded(
                    f"the daily limit of {limit} messages is used up; it resets at {resets_at}",
                    retry_after_seconds=retry,
                    details=[
                        {
                            "daily_limit": limit,
                            "used": answer.used,
                            "period": period.label,
                            "resets_at": resets_at,
                        }
                    ],
                )
            raise QuotaExceeded(
                f"the monthly quota of {limit} messages is used up; it resets at {resets_at}",
                retry_after_seconds=retry,
                details=[
                    {
                        "quota_limit": limit,
                        "used": answer.used,
                        "period": period.label,
                        "resets_at": resets_at,
                    }
                ],
            )
        self._taken.append(period)

    def give_back(self) -> None:
        """Undo ``take``: the message it counted was not accepted after all (a batch item)."""
        if self.taken:
            self.taken = False
            self._give_back_all()

    def _give_back_all(self) -> None:
        while self._taken:
            period = self._taken.pop()
            try:
                self._counter.give_back(self._client.id, period)
            except DependencyUnavailable:
                # The counter now reads one too many until the next reconciliation;
                # the original error is what the caller must see.
                log.warning(
                    "quota charge not given back; reconcile the counter",
                    extra={"client_id": str(self._client.id), "period": period.label},
                )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or not self.taken:
            return
        self.taken = False
        self._give_back_all()


def quota_usage(
    counter: QuotaCounter, uow: Callable[[], UnitOfWork], client: Client, period: QuotaPeriod
) -> QuotaUsage:
    used = counter.read(client.id, period)
    if used is None:
        used = count_accepted(uow(), client.id, period)
    return QuotaUsage(period=period, used=used, limit=client.quota_limit)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    client_id: uuid.UUID
    period: QuotaPeriod
    counter_before: int | None
    counted: int  # from the messages table
    counter_after: int | None
    # False when sends kept moving the counter during every attempt: run it again.
    settled: bool

    @property
    def corrected(self) -> bool:
        return self.counter_before != self.counter_after


def reconcile_quota(
    counter: QuotaCounter,
    uow: Callable[[], UnitOfWork],
    client_id: uuid.UUID,
    period: QuotaPeriod,
) -> Reconciliation:
    """Set the client's counter to what the messages table says.

    The counter is replaced only if it did not move while the table was
    counted (compare-and-set), so a send that lands meanwhile is not lost.
    A send that took its charge before the first read but had not committed
    its row when the table was counted is still missed; such a send is
    milliseconds long, and the next reconciliation counts it.
    """
    before: int | None = None
    for _ in range(RECONCILE_ATTEMPTS):
        before = counter.read(client_id, period)
        counted = count_accepted(uow(), client_id, period)
        # An unset counter is started from the table by the next send anyway.
        if before is None or before == counted:
            return Reconciliation(client_id, period, before, counted, before, settled=True)
        if counter.replace(client_id, period, expected=before, used=counted):
            return Reconciliation(client_id, period, before, counted, counted, settled=True)
    after = counter.read(client_id, period)
    return Reconciliation(client_id, period, before, counted, after, settled=False)


def reconcile_quotas(
    counter: QuotaCounter,
    uow: Callable[[], UnitOfWork],
    period: QuotaPeriod,
    *,
    client_ref: str | None,
    actor: Actor,
) -> list[Reconciliation]:
    """Reconcile one client (by id or API key) or every client, and audit it."""
    targets = [find_client(uow(), client_ref)] if client_ref else list_clients(uow())
    results = [reconcile_quota(counter, uow, client.id, period) for client in targets]
    with uow() as audit_uow:
        for result in results:
            audit_uow.audit.append(
                AuditEntry(
                    actor=actor.name,
                    action="quota.reconcile",
                    target_type="client",
                    target_id=str(result.client_id),
                    before={"period": period.label, "counter": result.counter_before},
                    after={
                        "period": period.label,
                        "counter": result.counter_after,
                        "counted": result.counted,
                    },
                    source_ip=actor.source_ip,
                )
            )
        audit_uow.commit()
    return results
