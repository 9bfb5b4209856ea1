"""The send queue's dead-letter queue: what the worker gave up on, and what SQS moved there.

SQS cannot peek. Reading the queue receives records, which hides them for a
while; every reader here hides them briefly, then deletes them (redrive,
purge) or makes them visible again at once (listing), so nothing stays
hidden after the call.
"""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailroom.adapters.queue import TRACE_ID_ATTRIBUTE, sqs_client
from mailroom.domain.errors import DeadLetterQueueUnavailable

REASON_ATTRIBUTE = "dead_letter_reason"
# SQS takes at most 10 entries per receive, delete or visibility batch.
SQS_BATCH = 10
# Message attributes are capped at 256 KB with the body; a reason needs far less.
REASON_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    sqs_message_id: str
    receipt_handle: str
    body: str
    # None when the body is not ours (a poison record).
    message_id: uuid.UUID | None
    trace_id: str | None
    # Why the worker moved it here; None when SQS moved it (redrive limit).
    reason: str | None
    # When the record was first sent: to the DLQ for the worker's, to the
    # send queue for SQS's own moves (which keep the original timestamp).
    sent_at: datetime | None


class DeadLetterQueue(abc.ABC):
    @property
    @abc.abstractmethod
    def name(self) -> str: ...

    @abc.abstractmethod
    def add(self, message_id: uuid.UUID, trace_id: str | None, reason: str) -> None:
        """Put a message whose retries ran out on the DLQ."""

    @abc.abstractmethod
    def receive(self, max_records: int, *, hide_seconds: int) -> list[DeadLetter]:
        """Up to ``max_records`` records, hidden from other readers for ``hide_seconds``."""

    @abc.abstractmethod
    def release(self, letters: Sequence[DeadLetter]) -> None:
        """Make received records visible again now."""

    @abc.abstractmethod
    def delete(self, letters: Sequence[DeadLetter]) -> None: ...

    @abc.abstractmethod
    def approximate_count(self) -> int: ...


class SqsDeadLetterQueue(DeadLetterQueue):
    def __init__(self, queue_url: str, region: str) -> None:
        self._queue_url = queue_url
        self._region = region
        self._client: Any = None

    @property
    def name(self) -> str:
        return self._queue_url.rstrip("/").rpartition("/")[2]

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = sqs_client(self._region)
        return self._client

    def add(self, message_id: uuid.UUID, trace_id: str | None, reason: str) -> None:
        attributes = {
            REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:REASON_LIMIT]}
        }
        if trace_id:
            attributes[TRACE_ID_ATTRIBUTE] = {"DataType": "String", "StringValue": trace_id}
        self._call(
            "send_message",
            QueueUrl=self._url(),
            # The send queue's body shape, so a redriven record reads the same.
            MessageBody=json.dumps({"message_id": str(message_id)}),
            MessageAttributes=attributes,
        )

    def receive(self, max_records: int, *, hide_seconds: int) -> list[DeadLetter]:
        letters: dict[str, DeadLetter] = {}
        while len(letters) < max_records:
            answer = self._call(
                "receive_message",
                QueueUrl=self._url(),
                MaxNumberOfMessages=min(SQS_BATCH, max_records - len(letters)),
                # A short wait asks every SQS server, not a sample of them.
                WaitTimeSeconds=1 if not letters else 0,
                VisibilityTimeout=hide_seconds,
                MessageSystemAttributeNames=["SentTimestamp"],
                MessageAttributeNames=["All"],
            )
            received = [_letter(raw) for raw in answer.get("Messages", [])]
            fresh = [letter for letter in received if letter.sqs_message_id not in letters]
            if not fresh:
                break
            letters.update((letter.sqs_message_id, letter) for letter in fresh)
        return list(letters.values())

    def release(self, letters: Sequence[DeadLetter]) -> None:
        for chunk in _chunks(letters):
            self._call(
                "change_message_visibility_batch",
                QueueUrl=self._url(),
                Entries=[
                    {"Id": str(i), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                    for i, letter in enumerate(chunk)
                ],
            )

    def delete(self, letters: Sequence[DeadLetter]) -> None:
        for chunk in _chunks(letters):
            self._call(
                "delete_message_batch",
                QueueUrl=self._url(),
                Entries=[
                    {"Id": str(i), "ReceiptHandle": letter.receipt_handle}
                    for i, letter in enumerate(chunk)
                ],
            )

    def approximate_count(self) -> int:
        answer = self._call(
            "get_queue_attributes",
            QueueUrl=self._url(),
            AttributeNames=["ApproximateNumberOfMessages"],
        )
        return int(answer.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    def _url(self) -> str:
        if not self._queue_url:
            raise DeadLetterQueueUnavailable("DEAD_LETTER_QUEUE_URL is not configured")
        return self._queue_url

    def _call(self, operation: str, **request: Any) -> Any:
        try:
            return getattr(self.client, operation)(**request)
        except (BotoCoreError, ClientError) as error:
            raise DeadLetterQueueUnavailable(f"the dead-letter queue failed: {error}") from error


def _letter(raw: dict[str, Any]) -> DeadLetter:
    attributes = raw.get("MessageAttributes", {})
    sent = raw.get("Attributes", {}).get("SentTimestamp")
    return DeadLetter(
        sqs_message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw["Body"],
        message_id=_message_id(raw["Body"]),
        trace_id=attributes.get(TRACE_ID_ATTRIBUTE, {}).get("StringValue"),
        reason=attributes.get(REASON_ATTRIBUTE, {}).get("StringValue"),
        sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
    )


def _message_id(body: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(json.loads(body)["message_id"]))
    except (ValueError, KeyError, TypeError):
        return None


def _chunks(letters: Sequence[DeadLetter]) -> list[Sequence[DeadLetter]]:
    return [letters[i : i + SQS_BATCH] for i in range(0, len(letters), SQS_BATCH)]
