"""The send queue: the API puts message ids on it, the worker takes them off."""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailroom.domain.errors import DependencyUnavailable

TRACE_ID_ATTRIBUTE = "trace_id"
# Messages per SendMessageBatch call.
SQS_BATCH_LIMIT = 10


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


class SqsMessageQueue(MessageQueue):
    """SQS through boto3; AWS_ENDPOINT_URL alone points it at AWS, LocalStack or moto."""

    def __init__(self, queue_url: str, region: str) -> None:
        self._queue_url = queue_url
        self._region = region
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = sqs_client(self._region)
        return self._client

    def enqueue(self, message_id: uuid.UUID, trace_id: str) -> None:
        if not self._queue_url:
            raise DependencyUnavailable("QUEUE_URL is not configured")
        try:
            self.client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=json.dumps({"message_id": str(message_id)}),
                MessageAttributes={
                    TRACE_ID_ATTRIBUTE: {"DataType": "String", "StringValue": trace_id}
                },
            )
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"the send queue refused the message: {error}") from error

    def enqueue_many(self, messages: Sequence[tuple[uuid.UUID, str]]) -> list[uuid.UUID]:
        """SendMessageBatch, ten messages a call (SQS's limit); the ids refused."""
        if not messages:
            return []
        if not self._queue_url:
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
                answer = self.client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except (BotoCoreError, ClientError):
                refused.extend(message_id for message_id, _ in chunk)
                continue
            refused.extend(chunk[int(failure["Id"])][0] for failure in answer.get("Failed", []))
        return refused


class PlannerQueue(abc.ABC):
    """Where a batch's planning is asked for (issue 17): the planner function drains it."""

    @abc.abstractmethod
    def request_planning(self, batch_id: uuid.UUID, trace_id: str) -> None:
        """Ask for the batch to be planned, or its planning to go on.

        Raises DependencyUnavailable if the queue refuses.
        """


class SqsPlannerQueue(PlannerQueue):
    def __init__(self, queue_url: str, region: str) -> None:
        self._queue_url = queue_url
        self._region = region
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = sqs_client(self._region)
        return self._client

    def request_planning(self, batch_id: uuid.UUID, trace_id: str) -> None:
        if not self._queue_url:
            raise DependencyUnavailable("PLANNER_QUEUE_URL is not configured")
        try:
            self.client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=json.dumps({"batch_id": str(batch_id)}),
                MessageAttributes={
                    TRACE_ID_ATTRIBUTE: {"DataType": "String", "StringValue": trace_id}
                },
            )
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"the planner queue refused the batch: {error}") from error
