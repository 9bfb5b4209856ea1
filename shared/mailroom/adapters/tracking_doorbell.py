"""The tracking consumer's SQS queue: the doorbell that wakes it, and its dead-letter queue.

A doorbell message carries nothing but "drain the hit stream"
(adapters/redis_tracking.py); the consumer's SQS trigger gives it Lambda's
retries and concurrency. Stream entries the consumer failed on too often are
sent to the dead-letter queue as they were queued, for an operator to look
at (and redrive through the stream, see docs/architecture.md).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailroom.adapters.queue import sqs_client
from mailroom.domain.errors import DependencyUnavailable

DRAIN = json.dumps({"drain": "tracking-hits"})


class IngestDoorbell(abc.ABC):
    @abc.abstractmethod
    def ring(self) -> None:
        """Ask for a drain of the hit stream; raise DependencyUnavailable if refused."""

    @abc.abstractmethod
    def dead_letter(self, bodies: Sequence[str]) -> None:
        """Keep these entries where an operator finds them; raise if refused."""


class SqsIngestDoorbell(IngestDoorbell):
    def __init__(self, queue_url: str, dead_letter_url: str, region: str) -> None:
        self._queue_url = queue_url
        self._dead_letter_url = dead_letter_url
        self._region = region
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = sqs_client(self._region)
        return self._client

    def ring(self) -> None:
        if not self._queue_url:
            raise DependencyUnavailable("TRACKING_INGEST_QUEUE_URL is not configured")
        try:
            self.client.send_message(QueueUrl=self._queue_url, MessageBody=DRAIN)
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"the tracking ingest queue refused: {error}") from error

    def dead_letter(self, bodies: Sequence[str]) -> None:
        if not bodies:
            return
        if not self._dead_letter_url:
            raise DependencyUnavailable("TRACKING_INGEST_DEAD_LETTER_QUEUE_URL is not configured")
        try:
            for start in range(0, len(bodies), 10):
                entries = [
                    {"Id": str(n), "MessageBody": body}
                    for n, body in enumerate(bodies[start : start + 10])
                ]
                answer = self.client.send_message_batch(
                    QueueUrl=self._dead_letter_url, Entries=entries
                )
                if answer.get("Failed"):
                    raise DependencyUnavailable("the tracking dead-letter queue refused entries")
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(
                f"the tracking dead-letter queue refused: {error}"
            ) from error
