"""The send queue: the API puts message ids on it, the worker takes them off."""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailroom.adapters import tracing
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


# SendMessageBatch takes at most ten entries.
SQS_BATCH_ENTRIES = 10


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One message for the queue, held back ``delay_seconds`` (0-900) before a worker sees it.

    ``band`` is the priority band's queue it goes on (issue 20): the scheduler
    releases a scheduled message onto its queue's band, as the send path
    does at acceptance.
    """

    message_id: uuid.UUID
    trace_id: str
    delay_seconds: int = 0
    band: Band = Band.NORMAL
    # The SQS fair queues' message group: the client id (see SqsMessageQueue).
    group_id: str | None = None


class MessageQueue(abc.ABC):
    @abc.abstractmethod
    def enqueue(self, message_id: uuid.UUID, trace_id: str) -> None:
        """Put one message on the queue; raise DependencyUnavailable if it is refused."""

    def enqueue_many(self, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        """Put these on the queue, each after its delay; the ids the queue refused.

        This default ignores the delays (an in-memory queue has no clock);
        SQS honours them.
        """
        refused: set[uuid.UUID] = set()
        for entry in entries:
            try:
                self.enqueue(entry.message_id, entry.trace_id)
            except DependencyUnavailable:
                refused.add(entry.message_id)
        return refused

    # Issue 20: priority bands. A queue without bands (the tests' and
    # benchmarks' recorders) puts every band on its one queue.
    def enqueue_in(
        self,
        band: Band,
        message_id: uuid.UUID,
        trace_id: str,
        *,
        delay_seconds: int = 0,
        group_id: str | None = None,
    ) -> None:
        """``enqueue`` onto ``band``'s queue, invisible for ``delay_seconds`` (at most 900).

        ``group_id``: the sending client's id, its SQS fair-queue message group.
        """
        self.enqueue(message_id, trace_id)

    def enqueue_many_in(
        self,
        band: Band,
        messages: Sequence[tuple[uuid.UUID, str]],
        *,
        group_id: str | None = None,
    ) -> list[uuid.UUID]:
        """``enqueue_many`` onto ``band``'s queue (one client's: ``group_id``); the ids refused."""
        return sorted(self.enqueue_many([QueueEntry(m, t) for m, t in messages]), key=str)


class SqsMessageQueue(MessageQueue):
    """SQS through boto3; AWS_ENDPOINT_URL alone points it at AWS, LocalStack or moto.

    ``fair_queues`` (SQS_FAIR_QUEUES): each message carries ``MessageGroupId``
    = its client's id, so SQS fair queues (2025) give every client a fair
    share of a band's consumers: one client's 200,000-message newsletter
    does not delay another's mail on the same band. A standard queue keeps
    its throughput and at-least-once delivery; the group only steers who is
    served first when one group has a backlog.
    """

    def __init__(
        self,
        queue_url: str,
        region: str,
        band_urls: dict[Band, str] | None = None,
        *,
        parallel_batches: int = 8,
        fair_queues: bool = False,
    ) -> None:
        # ``queue_url`` is the normal band's; a band without a URL of its
        # own (HIGH_PRIORITY_QUEUE_URL / LOW_PRIORITY_QUEUE_URL unset) uses it.
        self._queue_url = queue_url
        self._band_urls = {band: url for band, url in (band_urls or {}).items() if url}
        self._region = region
        self._client: Any = None
        # The scheduler's bulk enqueue: SendMessageBatch calls in flight at once.
        self._parallel_batches = parallel_batches
        self._fair = fair_queues

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = sqs_client(self._region)
        return self._client

    def enqueue(self, message_id: uuid.UUID, trace_id: str) -> None:
        self._send(self._queue_url, message_id, trace_id, 0)

    def enqueue_in(
        self,
        band: Band,
        message_id: uuid.UUID,
        trace_id: str,
        *,
        delay_seconds: int = 0,
        group_id: str | None = None,
    ) -> None:
        self._send(
            self._band_urls.get(band, self._queue_url),
            message_id,
            trace_id,
            delay_seconds,
            group_id,
        )

    def _send(
        self,
        queue_url: str,
        message_id: uuid.UUID,
        trace_id: str,
        delay: int,
        group_id: str | None = None,
    ) -> None:
        if not queue_url:
            raise DependencyUnavailable("QUEUE_URL is not configured")
        attributes = {TRACE_ID_ATTRIBUTE: {"DataType": "String", "StringValue": trace_id}}
        try:
            with tracing.span("api.enqueue"):
                # W3C trace context: the worker's spans continue this one.
                traceparent = tracing.current_traceparent(trace_id)
                if traceparent is not None:
                    attributes[tracing.TRACEPARENT_ATTRIBUTE] = {
                        "DataType": "String",
                        "StringValue": traceparent,
                    }
                self.client.send_message(
                    QueueUrl=queue_url,
                    MessageBody=json.dumps({"message_id": str(message_id)}),
                    MessageAttributes=attributes,
                    DelaySeconds=max(0, min(MAX_DELAY_SECONDS, delay)),
                    **self._group(group_id),
                )
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"the send queue refused the message: {error}") from error

    def enqueue_many(self, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        if all(entry.band is Band.NORMAL for entry in entries):
            return self._send_entries(self._queue_url, entries)
        by_band: dict[Band, list[QueueEntry]] = {}
        for entry in entries:
            by_band.setdefault(entry.band, []).append(entry)
        refused: set[uuid.UUID] = set()
        for band in (Band.HIGH, Band.NORMAL, Band.LOW):
            if band in by_band:
                url = self._band_urls.get(band, self._queue_url)
                refused |= self._send_entries(url, by_band[band])
        return refused

    def enqueue_many_in(
        self,
        band: Band,
        messages: Sequence[tuple[uuid.UUID, str]],
        *,
        group_id: str | None = None,
    ) -> list[uuid.UUID]:
        refused = self._send_entries(
            self._band_urls.get(band, self._queue_url),
            [QueueEntry(m, t, group_id=group_id) for m, t in messages],
        )
        return [message_id for message_id, _ in messages if message_id in refused]

    def _send_entries(self, queue_url: str, entries: Sequence[QueueEntry]) -> set[uuid.UUID]:
        if not entries:
            return set()
        if not queue_url:
            return {entry.message_id for entry in entries}
        batches = [
            entries[start : start + SQS_BATCH_ENTRIES]
            for start in range(0, len(entries), SQS_BATCH_ENTRIES)
        ]
        client = self.client  # built once, before the threads share it (boto3 clients are)
        if len(batches) == 1:
            return self._send_batch(client, queue_url, batches[0])
        refused: set[uuid.UUID] = set()
        # SQS answers in milliseconds, but 10,000 calls one after the other
        # would not fit the scheduler's minute (issue 18's benchmark).
        with ThreadPoolExecutor(max_workers=self._parallel_batches) as pool:
            for failed in pool.map(lambda b: self._send_batch(client, queue_url, b), batches):
                refused |= failed
        return refused

    def _group(self, group_id: str | None) -> dict[str, str]:
        return {"MessageGroupId": group_id} if self._fair and group_id else {}

    def _send_batch(
        self, client: Any, queue_url: str, batch: Sequence[QueueEntry]
    ) -> set[uuid.UUID]:
        by_entry = {str(index): entry for index, entry in enumerate(batch)}
        try:
            answer = client.send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {
                        "Id": key,
                        "MessageBody": json.dumps({"message_id": str(entry.message_id)}),
                        "DelaySeconds": entry.delay_seconds,
                        "MessageAttributes": {
                            TRACE_ID_ATTRIBUTE: {
                                "DataType": "String",
                                "StringValue": entry.trace_id,
                            }
                        },
                        **self._group(entry.group_id),
                    }
                    for key, entry in by_entry.items()
                ],
            )
        except (BotoCoreError, ClientError):
            return {entry.message_id for entry in batch}
        return {by_entry[failed["Id"]].message_id for failed in answer.get("Failed", [])}


class PlannerQueue(abc.ABC):
    """Where a batch's planning is asked for (issue 17): the planner function drains it."""

    @abc.abstractmethod
    def request_planning(
        self, batch_id: uuid.UUID, trace_id: str, *, delay_seconds: int = 0
    ) -> None:
        """Ask for the batch to be planned, or its planning to go on.

        ``delay_seconds`` (0-900) holds the record back: a scheduled batch
        (issue 18) released ahead of its time reaches the planner at it.
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

    def request_planning(
        self, batch_id: uuid.UUID, trace_id: str, *, delay_seconds: int = 0
    ) -> None:
        if not self._queue_url:
            raise DependencyUnavailable("PLANNER_QUEUE_URL is not configured")
        try:
            self.client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=json.dumps({"batch_id": str(batch_id)}),
                DelaySeconds=max(0, min(MAX_DELAY_SECONDS, delay_seconds)),
                MessageAttributes={
                    TRACE_ID_ATTRIBUTE: {"DataType": "String", "StringValue": trace_id}
                },
            )
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"the planner queue refused the batch: {error}") from error
