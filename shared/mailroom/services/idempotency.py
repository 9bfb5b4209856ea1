"""Idempotency-Key on POST /v1/send: one accepted message per key and client for 24 hours.

The key is held (committed) before the request is handled, completed in the
same transaction that writes the message row, and released when nothing was
accepted, so that a corrected retry may use it again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.domain.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidRequest

KEY_TTL = timedelta(hours=24)
# A hold without a message older than this belongs to a request that died
# (the API's Lambda timeout is 15 s): a retry may take the key over.
STALE_HOLD = timedelta(seconds=60)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Hold:
    """This request's hold on a key."""

    client_id: uuid.UUID
    key: str
    owner: uuid.UUID


@dataclass(frozen=True, slots=True)
class Replay:
    """The original answer to a request repeated under the same key."""

    message_id: uuid.UUID
    response: dict[str, Any]


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            details=[{"field": "Idempotency-Key", "message": "invalid"}],
        )
    return key


def fingerprint(request_body: dict[str, Any]) -> str:
    """SHA-256 of the parsed request in canonical JSON: key order and spacing do not count."""
    canonical = json.dumps(request_body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def begin(uow: UnitOfWork, client_id: uuid.UUID, key: str, request_hash: str) -> Hold | Replay:
    """Hold the key for this request, or answer as the key's first request was answered.

    Raises IdempotencyKeyReused (422) when the key came with another body and
    IdempotencyInProgress (409) while the first request is still in flight.
    """
    owner = uuid.uuid4()
    with uow:
        stored = uow.idempotency.hold(
            client_id, key, request_hash, owner, ttl=KEY_TTL, stale_after=STALE_HOLD
        )
        uow.commit()
    if stored is None:
        return Hold(client_id, key, owner)
    if stored.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request in the last 24 hours"
        )
    if stored.message_id is None or stored.response is None:
        raise IdempotencyInProgress(
            "a request with this Idempotency-Key is still in progress; retry shortly"
        )
    return Replay(stored.message_id, stored.response)


def complete(uow: UnitOfWork, hold: Hold, message_id: uuid.UUID, response: dict[str, Any]) -> None:
    """Inside the transaction that writes the message row; the caller commits."""
    uow.idempotency.complete(hold.client_id, hold.key, hold.owner, message_id, response)


def release(uow: UnitOfWork, hold: Hold) -> None:
    with uow:
        uow.idempotency.release(hold.client_id, hold.key, hold.owner)
        uow.commit()
