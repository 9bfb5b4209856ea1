"""Sending domains and their DKIM keys in PostgreSQL (issue 16)."""

from __future__ import annotations

import abc
import uuid
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailroom.adapters.db.tables import DkimKeyRow, SendingDomainRow
from mailroom.domain.dkim import DkimAlgorithm
from mailroom.domain.errors import DomainTaken
from mailroom.domain.sending_domains import DkimKey, DomainStatus, KeyState, SendingDomain

LIST_LIMIT = 500


class SendingDomainRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, domain: SendingDomain) -> None:
        """Insert the domain and its keys; DomainTaken if the name is registered already."""

    @abc.abstractmethod
    def get(self, domain_id: uuid.UUID, client_id: uuid.UUID | None = None) -> SendingDomain | None:
        """The domain (of ``client_id`` when given), locked for the transaction's update."""

    @abc.abstractmethod
    def by_name(self, name: str) -> SendingDomain | None: ...

    @abc.abstractmethod
    def list_for(self, client_id: uuid.UUID) -> list[SendingDomain]: ...

    @abc.abstractmethod
    def due_for_check(self, checked_before: datetime, limit: int) -> list[uuid.UUID]:
        """Ids of domains not checked since ``checked_before``, oldest check first."""

    @abc.abstractmethod
    def save(self, domain: SendingDomain) -> None:
        """Write the domain's status, checks and keys (new keys inserted, states updated)."""

    @abc.abstractmethod
    def remove(self, domain_id: uuid.UUID) -> None: ...

    @abc.abstractmethod
    def is_verified_sender(self, client_id: uuid.UUID, name: str) -> bool: ...


class SqlSendingDomainRepository(SendingDomainRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, domain: SendingDomain) -> None:
        try:
            with self._session.begin_nested():
                self._session.execute(
                    insert(SendingDomainRow).values(
                        id=domain.id,
                        client_id=domain.client_id,
                        domain=domain.domain,
                        status=domain.status.value,
                        ses_dkim_tokens=domain.ses_dkim_tokens,
                        ses_identity_created=domain.ses_identity_created,
                        checks=domain.checks,
                        tracking_host=domain.tracking_host,
                    )
                )
        except IntegrityError as error:
            raise DomainTaken(
                f"{domain.domain} is registered already",
                details=[{"field": "domain", "message": "registered already"}],
            ) from error
        self._save_keys(domain)

    def get(self, domain_id: uuid.UUID, client_id: uuid.UUID | None = None) -> SendingDomain | None:
        query = select(SendingDomainRow).where(SendingDomainRow.id == domain_id)
        if client_id is not None:
            query = query.where(SendingDomainRow.client_id == client_id)
        row = self._session.scalars(query.with_for_update()).first()
        return self._with_keys([row])[0] if row is not None else None

    def by_name(self, name: str) -> SendingDomain | None:
        row = self._session.scalars(
            select(SendingDomainRow).where(SendingDomainRow.domain == name)
        ).first()
        return self._with_keys([row])[0] if row is not None else None

    def list_for(self, client_id: uuid.UUID) -> list[SendingDomain]:
        rows = self._session.scalars(
            select(SendingDomainRow)
            .where(SendingDomainRow.client_id == client_id)
            .order_by(SendingDomainRow.domain)
            .limit(LIST_LIMIT)
        ).all()
        return self._with_keys(list(rows))

    def due_for_check(self, checked_before: datetime, limit: int) -> list[uuid.UUID]:
        return list(
            self._session.scalars(
                select(SendingDomainRow.id)
                .where(
                    (SendingDomainRow.last_checked_at.is_(None))
                    | (SendingDomainRow.last_checked_at < checked_before)
                )
                .order_by(SendingDomainRow.last_checked_at.asc().nulls_first())
                .limit(limit)
            ).all()
        )

    def save(self, domain: SendingDomain) -> None:
        self._session.execute(
            update(SendingDomainRow)
            .where(SendingDomainRow.id == domain.id)
            .values(
                status=domain.status.value,
                ses_dkim_tokens=domain.ses_dkim_tokens,
                checks=domain.checks,
                last_checked_at=domain.last_checked_at,
                verified_at=domain.verified_at,
                tracking_host=domain.tracking_host,
                updated_at=func.now(),
            )
        )
        self._save_keys(domain)

    def remove(self, domain_id: uuid.UUID) -> None:
        self._session.execute(delete(SendingDomainRow).where(SendingDomainRow.id == domain_id))

    def is_verified_sender(self, client_id: uuid.UUID, name: str) -> bool:
        found = self._session.scalar(
            select(SendingDomainRow.id).where(
                SendingDomainRow.client_id == client_id,
                SendingDomainRow.domain == name,
                SendingDomainRow.status == DomainStatus.VERIFIED.value,
            )
        )
        return found is not None

    def _save_keys(self, domain: SendingDomain) -> None:
        for key in domain.keys:
            statement = insert(DkimKeyRow).values(
                domain_id=domain.id,
                selector=key.selector,
                algorithm=key.algorithm.value,
                sealed_private_key=key.sealed_private_key,
                public_record=key.public_record,
                state=key.state.value,
            )
            self._session.execute(
                statement.on_conflict_do_update(
                    index_elements=[DkimKeyRow.domain_id, DkimKeyRow.selector],
                    set_={"state": statement.excluded.state},
                )
            )

    def _with_keys(self, rows: list[SendingDomainRow]) -> list[SendingDomain]:
        if not rows:
            return []
        keys: dict[uuid.UUID, list[DkimKey]] = {row.id: [] for row in rows}
        for key_row in self._session.scalars(
            select(DkimKeyRow)
            .where(DkimKeyRow.domain_id.in_(list(keys)))
            .order_by(DkimKeyRow.created_at, DkimKeyRow.selector)
        ):
            keys[key_row.domain_id].append(
                DkimKey(
                    selector=key_row.selector,
                    algorithm=DkimAlgorithm(key_row.algorithm),
                    sealed_private_key=key_row.sealed_private_key,
                    public_record=key_row.public_record,
                    state=KeyState(key_row.state),
                    created_at=key_row.created_at,
                )
            )
        return [
            SendingDomain(
                id=row.id,
                client_id=row.client_id,
                domain=row.domain,
                status=DomainStatus(row.status),
                keys=keys[row.id],
                ses_dkim_tokens=list(row.ses_dkim_tokens),
                ses_identity_created=row.ses_identity_created,
                checks=list(row.checks),
                last_checked_at=row.last_checked_at,
                verified_at=row.verified_at,
                created_at=row.created_at,
                tracking_host=row.tracking_host,
            )
            for row in rows
        ]
