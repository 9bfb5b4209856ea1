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


class BatchQuotaCharge:
    """A batch's charge (issue 17): its items counted in one step per period.

    ``take_up_to(n)`` counts as many of the next ``n`` items as the daily
    limit and the monthly quota allow (the first ones: a batch's quota runs
    out at an index); ``give_back(k)`` returns k of them (items not written
    after all). As a context manager, an exception gives back everything.
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
        self.counted = 0

    def _periods(self) -> list[tuple[QuotaPeriod, int]]:
        client = self._client
        periods = [(self.period, client.quota_limit)]
        if client.daily_limit is not None:
            periods.insert(0, (self.day, client.daily_limit))
        return periods

    def take_up_to(
        self, count: int, *, all_or_nothing: bool = False
    ) -> tuple[int, QuotaExceeded | None]:
        """How many of ``count`` were counted, and the refusal of the rest (None: all were).

        ``all_or_nothing``: the caller gives the counted ones back on a
        refusal, so the refusal's ``used`` is the count before this call.
        """
        allowed = count
        counted: list[QuotaPeriod] = []
        refusal: QuotaExceeded | None = None
        try:
            for period, limit in self._periods():
                taken, used = self._take(period, limit, allowed)
                # Periods already counted for more than this one allows give the rest back.
                for earlier in counted:
                    self._counter.give_back_many(self._client.id, earlier, allowed - taken)
                if taken < allowed and refusal is None:
                    before = used - taken if all_or_nothing else used
                    refusal = _quota_refusal(period, limit, before, self._now)
                allowed = taken
                counted.append(period)
                if not allowed:
                    break
        except BaseException:
            for period in counted:
                self._counter.give_back_many(self._client.id, period, allowed)
            raise
        self.counted += allowed
        return allowed, refusal

    def _take(self, period: QuotaPeriod, limit: int, count: int) -> tuple[int, int]:
        answer = self._counter.take_up_to(self._client.id, period, limit, count)
        if answer is None:
            self._counter.seed(
                self._client.id, period, count_accepted(self._uow(), self._client.id, period)
            )
            answer = self._counter.take_up_to(self._client.id, period, limit, count)
            if answer is None:
                raise DependencyUnavailable("the quota counter could not be started")
        return answer

    def give_back(self, count: int) -> None:
        count = min(count, self.counted)
        if count <= 0:
            return
        self.counted -= count
        for period, _ in self._periods():
            try:
                self._counter.give_back_many(self._client.id, period, count)
            except DependencyUnavailable:
                log.warning(
                    "quota charge not given back; reconcile the counter",
                    extra={"client_id": str(self._client.id), "period": period.label},
                )

    def take_all(self, count: int) -> None:
        """Count all ``count`` or none: QuotaExceeded (or DailyLimitExceeded) if they do not fit.

        A bulk batch (issue 17) is refused whole, as a single send is: the
        refusal is the one ``/v1/send`` gives, with the numbers of the
        period that ran out.
        """
        taken, refusal = self.take_up_to(count, all_or_nothing=True)
        if refusal is not None:
            self.give_back(taken)
            raise refusal

    def give_back_earlier(self, count: int) -> None:
        """Give back ``count`` counted by an earlier charge of this client (not this one's).

        A bulk batch is charged for every inline recipient when it is
        accepted; the planner, later, gives back those that got no message
        (bad address, suppressed, duplicate), as a single send refused for
        them is not counted. The current periods are the ones given back to.
        """
        self.counted += max(count, 0)
        self.give_back(count)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.give_back(self.counted)


def _quota_refusal(period: QuotaPeriod, limit: int, used: int, now: datetime) -> QuotaExceeded:
    resets_at = period.end.isoformat().replace("+00:00", "Z")
    retry = period.seconds_until_end(now)
    if period.is_day:
        return DailyLimitExceeded(
            f"the daily limit of {limit} messages is used up; it resets at {resets_at}",
            retry_after_seconds=retry,
            details=[
                {"daily_limit": limit, "used": used, "period": period.label, "resets_at": resets_at}
            ],
        )
    return QuotaExceeded(
        f"the monthly quota of {limit} messages is used up; it resets at {resets_at}",
        retry_after_seconds=retry,
        details=[
            {"quota_limit": limit, "used": used, "period": period.label, "resets_at": resets_at}
        ],
    )


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
