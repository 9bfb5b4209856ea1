"""The send queue: the API puts message ids on it, the worker takes them off."""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailroom.domain.errors import DependencyUnavailable
from mailroom.domain.queues import Band

TRACE_ID_ATTRIBUTE = "trace_id"
# Messages per SendMessageBatch call.
SQS_BATCH_LIMIT = 10
# SQS's longest per-message delay.
MAX_DELAY_SECONDS = 900


def sqs_client(region: str) -> Any:
    """A boto3 SQS client; AWS_ENDPOINT_URL alone points it at AWS, LocalStack or moto.

    A short timeout and few retries: callers answer 503 (or retry later)
    rather than hang while SQS is unreachable.
    """
    # boto3 and botocore.config cost ~150-250 ms to import: paid here, on the
    # first SQS call, not by every function's cold start (the webhooks
    # function, and status outside /health, never call SQS; issue 8).
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "sqs",
        region_name=region,
        config=BotoConfig(
            connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}
        ),
    )


class MessageQueue(abc.ABC):
    @abc.abstractmethod
    def enqueue(self, message_id: uuid.UUID, trace_id: str) -> None:
        """Put one message on the queue; raise DependencyUnavailable if it is refused."""

    def enqueue_many(self, messages: Sequence[tuple[uuid.UUID, str]]) -> list[uuid.UUID]:
        """Put (message id, trace id) pairs on the queue; the ids it refused."""
        refused = []
        for message_id, trace_id in messages:
            try:
                self.enqueue(message_id, trace_id)
            except DependencyUnavailable:
                refused.append(message_id)
        return refused

    # Issue 20: priority bands. A queue without bands (the tests' and
    # benchmarks' recorders) puts every band on its one queue.
    def enqueue_in(
        self, band: Band, message_id: uuid.UUID, trace_id: str, *, delay_seconds: int = 0
    ) -> None:
        """``enqueue`` onto ``band``'s queue, invisible for ``delay_seconds`` (at most 900)."""
        self.enqueue(message_id, trace_id)

    def enqueue_many_in(
        self, band: Band, messages: Sequence[tuple[uuid.UUID, str]]
    ) -> list[uuid.UUID]:
        """``enqueue_many`` onto ``band``'s queue; the ids refused."""
        return self.enqueue_many(messages)


class SqsMessageQueue(MessageQueue):
    """SQS through boto3; AWS_ENDPOINT_URL alone points it at AWS, LocalStack or moto."""

    def __init__(
        self, queue_url: str, region: str, band_urls: dict[Band, str] | None = None
    ) -> None:
        # ``queue_url`` is the normal band's; a band without a URL of its
        # own (HIGH_PRIORITY_QUEUE_URL / LOW_PRIORITY_QUEUE_URL unset) uses it.
        self._queue_url = queue_url
        self._band_urls = {band: url for band, url in (band_urls or {}).items() if url}
        self._region = region
        self._client: Any = None

    def enqueue_in(
        self, band: Band, message_id: uuid.UUID, trace_id: str, *, delay_seconds: int = 0
    ) -> None:
        self._send(self._band_urls.get(band, self._queue_url), message_id, trace_id, delay_seconds)

    def enqueue_many_in(
        self, band: Band, messages: Sequence[tuple[uuid.UUID, str]]
    ) -> list[uuid.UUID]:
        return self._send_many(self._band_urls.get(band, self._queue_url), messages)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = sqs_client(self._region)
        return self._client

    def enqueue(self, message_id: uuid.UUID, trace_id: str) -> None:
        self._send(self._queue_url, message_id, trace_id, 0)

    def _send(self, queue_url: str, message_id: uuid.UUID, trace_id: str, delay: int) -> None:
        if not queue_url:
            raise DependencyUnavailable("QUEUE_URL is not configured")
        try:
            self.client.send_message(
                QueueUrl=queue_url,
                MessageBody=json.dumps({"message_id": str(message_id)}),
                MessageAttributes={
                    TRACE_ID_ATTRIBUTE: {"DataType": "String", "StringValue": trace_id}
                },
                DelaySeconds=max(0, min(MAX_DELAY_SECONDS, delay)),
            )
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"the send queue refused the message: {error}") from error

    def enqueue_many(self, messages: Sequence[tuple[uuid.UUID, str]]) -> list[uuid.UUID]:
        """SendMessageBatch, ten messages a call (SQS's limit); the ids refused."""
        return self._send_many(self._queue_url, messages)

    def _send_many(
        self, queue_url: str, messages: Sequence[tuple[uuid.UUID, str]]
    ) -> list[uuid.UUID]:
        if not messages:
            return []
        if not queue_url:
            return [message_id for message_id, _ in messages]
        refused: list[uuid.UUID] = []
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            chunk = messages[start : start + SQS_BATCH_LIMIT]
            entries = [
                {
                    "Id": str(position),
                    "MessageBody": json.dumps({"message_id": str(message_id)}),
                    "MessageAttributes": {
                        TRACE_ID_ATTRIBUTE: {"DataType": "String", "StringValue": trace_id}
                    },
                }
                for position, (message_id, trace_id) in enumerate(chunk)
            ]
            try:
                answer = self.client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            except (BotoCoreError, ClientError):
                refused.extend(message_id for message_id, _ in chunk)
                continue
            refused.extend(chunk[int(failure["Id"])][0] for failure in answer.get("Failed", []))
        return refused
