"""The webhook dispatcher's queue: delivery ids, the relay and retries put them on it."""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailroom.adapters.queue import sqs_client
from mailroom.domain.errors import DependencyUnavailable

# SQS's longest per-message delay; later retries wait in PostgreSQL.
MAX_SQS_DELAY_SECONDS = 900
# Ids per SQS message: the relay packs due deliveries so a dispatcher batch
# of 10 messages carries up to 250 deliveries (SQS bills and limits per message).
IDS_PER_MESSAGE = 25


def delivery_ids_of(body: str) -> list[int]:
    """The ids a queue message carries; ValueError for anything else."""
    parsed = json.loads(body)
    ids = parsed.get("delivery_ids") if isinstance(parsed, dict) else None
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise ValueError("not a webhook dispatcher message")
    return ids


class WebhookQueue(abc.ABC):
    @abc.abstractmethod
    def send(self, delivery_ids: Sequence[int], *, delay_seconds: int = 0) -> None:
        """Put these deliveries on the queue; raise DependencyUnavailable if refused."""


class SqsWebhookQueue(WebhookQueue):
    def __init__(self, queue_url: str, region: str) -> None:
        self._queue_url = queue_url
        self._region = region
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = sqs_client(self._region)
        return self._client

    def send(self, delivery_ids: Sequence[int], *, delay_seconds: int = 0) -> None:
        if not delivery_ids:
            return
        if not self._queue_url:
            raise DependencyUnavailable("WEBHOOK_QUEUE_URL is not configured")
        delay = max(0, min(MAX_SQS_DELAY_SECONDS, delay_seconds))
        chunks = [
            list(delivery_ids[i : i + IDS_PER_MESSAGE])
            for i in range(0, len(delivery_ids), IDS_PER_MESSAGE)
        ]
        try:
            for start in range(0, len(chunks), 10):
                entries = [
                    {
                        "Id": str(n),
                        "MessageBody": json.dumps({"delivery_ids": chunk}),
                        "DelaySeconds": delay,
                    }
                    for n, chunk in enumerate(chunks[start : start + 10])
                ]
                answer = self.client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
                if answer.get("Failed"):
                    raise DependencyUnavailable(
                        f"the webhook queue refused {len(answer['Failed'])} messages"
                    )
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"the webhook queue refused the batch: {error}") from error
