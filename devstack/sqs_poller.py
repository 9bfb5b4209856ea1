"""The SQS event source mapping: poll a queue, invoke the function, settle the batch."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from devstack.aws import ProvisionedQueue
from devstack.lambda_runtime import LocalFunction
from devstack.template import SqsTrigger

log = logging.getLogger(__name__)

LONG_POLL_SECONDS = 1  # short, so a stop request is noticed within a second
# Between rounds over several priority bands while all are empty: three
# receive calls to moto ten times a second cost a few % of a core.
IDLE_POLL_SECONDS = 0.1
DELETE_BATCH_LIMIT = 10  # SQS's maximum entries per DeleteMessageBatch


class QueuePoller:
    """Feeds one queue to one function as Lambda's event source mapping does.

    Records the function reports in ``batchItemFailures`` are left on the queue
    untouched and come back after their visibility timeout (the queue's, or
    what the function set with ChangeMessageVisibility); so does the whole
    batch when the function raises or answers something Lambda would not
    accept. SQS itself moves a message to the dead-letter queue after
    maxReceiveCount.
    """

    def __init__(
        self,
        sqs: Any,
        queue: ProvisionedQueue,
        trigger: SqsTrigger,
        function: LocalFunction,
        *,
        region: str,
    ) -> None:
        self._sqs = sqs
        self._queue = queue
        self._trigger = trigger
        self._function = function
        self._region = region
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sqs-{function.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop polling and wait for the batch in hand; False if it is still running."""
        self._stopping.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = self._receive_batch()
                if messages:
                    self._deliver(messages)
            except (BotoCoreError, ClientError) as error:
                if self._stopping.is_set():
                    return
                log.warning("polling %s failed: %s", self._queue.name, error)
                self._stopping.wait(LONG_POLL_SECONDS)

    def _receive(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        answer = self._sqs.receive_message(
            QueueUrl=self._queue.url,
            MaxNumberOfMessages=min(count, 10),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(answer.get("Messages", []))

    def _receive_batch(
        self, wait_seconds: int = LONG_POLL_SECONDS, *, gather: bool = True
    ) -> list[dict[str, Any]]:
        batch_size = self._trigger.batch_size
        messages = self._receive(batch_size, wait_seconds)
        if not messages or not gather:
            return messages
        # MaximumBatchingWindowInSeconds: gather more before invoking, for at
        # most that long after the first message arrived.
        deadline = time.monotonic() + self._trigger.batching_window_seconds
        while len(messages) < batch_size and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            more = self._receive(batch_size - len(messages), 0)
            if more:
                messages.extend(more)
            else:
                self._stopping.wait(min(0.1, remaining))
        return messages

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(message) for message in messages]}
        name = self._function.name
        try:
            invocation = self._function.invoke(event)
        except Exception:
            log.exception(
                "%s raised: the %d message(s) of the batch return to %s after %s s",
                name,
                len(messages),
                self._queue.name,
                self._queue.visibility_timeout_seconds,
            )
            return
        failed = self._failed_ids(invocation.result, [m["MessageId"] for m in messages])
        succeeded = [m for m in messages if m["MessageId"] not in failed]
        self._delete(succeeded)
        retry = (
            # When they come back is the handler's call (the worker sets each
            # one's visibility to its backoff delay); the poller never resets it.
            f", {len(failed)} left on the queue for redelivery" if failed else ""
        )
        log.info(
            "%s: batch of %d from %s, %d done%s (%.0f ms)",
            name,
            len(messages),
            self._queue.name,
            len(succeeded),
            retry,
            invocation.duration_ms,
        )

    def _failed_ids(self, result: Any, message_ids: Sequence[str]) -> set[str]:
        """The messages to leave on the queue, by Lambda's rules for the response."""
        if not self._trigger.report_batch_item_failures:
            return set()
        if result is None or (isinstance(result, dict) and "batchItemFailures" not in result):
            return set()
        failures = result.get("batchItemFailures") if isinstance(result, dict) else None
        if failures is None:
            return set()
        known = set(message_ids)
        failed: set[str] = set()
        for failure in failures if isinstance(failures, list) else [None]:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not isinstance(identifier, str) or identifier not in known:
                # Lambda treats a response it cannot read as a failed batch.
                log.error("%s answered invalid batchItemFailures: %r", self._function.name, result)
                return known
            failed.add(identifier)
        return failed

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), DELETE_BATCH_LIMIT):
            chunk = messages[start : start + DELETE_BATCH_LIMIT]
            answer = self._sqs.delete_message_batch(
                QueueUrl=self._queue.url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )
            for failure in answer.get("Failed", []):
                log.warning("deleting a message from %s failed: %s", self._queue.name, failure)

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: lambda_message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue.arn,
            "awsRegion": self._region,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record


class PriorityPoller:
    """Several queues of one function, polled in priority order in one loop (issue 20).

    On AWS each priority band has its own event source mapping, and the high
    band gets the most concurrent workers (ScalingConfig.MaximumConcurrency).
    Here one loop stands for them: each round takes a batch from the first
    band that has one, highest MaximumConcurrency first, so a low-priority
    backlog never delays a high-priority message by more than one batch.
    When every band is empty it looks again after ``IDLE_POLL_SECONDS``.
    """

    def __init__(self, bands: Sequence[QueuePoller]) -> None:
        self._bands = list(bands)
        self._stopping = threading.Event()
        name = self._bands[0]._function.name
        self._thread = threading.Thread(target=self._run, name=f"sqs-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        self._stopping.set()
        for band in self._bands:
            band._stopping.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._round()
            except (BotoCoreError, ClientError) as error:
                if self._stopping.is_set():
                    return
                log.warning("polling the priority bands failed: %s", error)
                self._stopping.wait(LONG_POLL_SECONDS)

    def _round(self) -> None:
        # No batching window here: waiting to fill a low band's batch would
        # keep a high band's message waiting too.
        for band in self._bands:
            messages = band._receive_batch(wait_seconds=0, gather=False)
            if messages:
                band._deliver(messages)
                return
        # All empty: look again shortly. A long poll would wait on one band
        # only, and a message becoming visible on another (a scheduled one's
        # SQS delay ending, on the normal band) would wait out that poll: up
        # to a second late, as bench/scheduled_lateness.py showed.
        self._stopping.wait(IDLE_POLL_SECONDS)


def lambda_message_attribute(attribute: dict[str, Any]) -> dict[str, Any]:
    """A message attribute from SQS's API shape to the one in Lambda's event."""
    converted: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": attribute["DataType"],
    }
    if "StringValue" in attribute:
        converted["stringValue"] = attribute["StringValue"]
    if "BinaryValue" in attribute:
        converted["binaryValue"] = base64.b64encode(attribute["BinaryValue"]).decode("ascii")
    return converted
