"""The send queue's records as the worker holds them: hold one back, know the redrive limit."""

from __future__ import annotations

import abc
import json
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailroom.adapters.queue import sqs_client
from mailroom.domain.retry import SQS_MAX_VISIBILITY_SECONDS

log = logging.getLogger(__name__)


class QueueRecords(abc.ABC):
    @abc.abstractmethod
    def postpone(self, receipt_handle: str, seconds: int) -> bool:
        """Keep a received record invisible for ``seconds`` from now; False if SQS refused."""

    @abc.abstractmethod
    def max_receive_count(self) -> int | None:
        """The queue's redrive limit (maxReceiveCount), None if it has none or is unknown."""

    def postpone_in(self, source_arn: str | None, receipt_handle: str, seconds: int) -> bool:
        """``postpone`` for a record of the queue ``source_arn`` names (issue 20's bands)."""
        return self.postpone(receipt_handle, seconds)

    def is_last_receive(self, receive_count: int) -> bool:
        """True when SQS will move this record to the DLQ rather than deliver it again."""
        limit = self.max_receive_count()
        return limit is not None and receive_count >= limit


class SqsQueueRecords(QueueRecords):
    def __init__(
        self,
        queue_url: str,
        region: str,
        max_receive_count: int | None = None,
        band_urls: tuple[str, ...] = (),
    ) -> None:
        """``max_receive_count``: the queue's redrive limit if the deployment
        states it; otherwise it is read from the queue on first use.
        ``band_urls``: the other priority bands' queues (same redrive limit)."""
        self._queue_url = queue_url
        # A record is postponed on the queue it came from: by its queue name,
        # the last part of both the event's ARN and the queue's URL.
        self._url_by_name = {
            url.rstrip("/").rsplit("/", 1)[-1]: url for url in (queue_url, *band_urls) if url
        }
        self._region = region
        self._client: Any = None
        self._max_receive_count = max_receive_count
        self._redrive_known = max_receive_count is not None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = sqs_client(self._region)
        return self._client

    def postpone_in(self, source_arn: str | None, receipt_handle: str, seconds: int) -> bool:
        name = (source_arn or "").rsplit(":", 1)[-1]
        url = self._url_by_name.get(name, self._queue_url)
        if url == self._queue_url:
            return self.postpone(receipt_handle, seconds)
        return self._postpone(url, receipt_handle, seconds)

    def postpone(self, receipt_handle: str, seconds: int) -> bool:
        return self._postpone(self._queue_url, receipt_handle, seconds)

    def _postpone(self, queue_url: str, receipt_handle: str, seconds: int) -> bool:
        # The total invisibility of one receive is capped at 12 hours by SQS;
        # the backoff's own cap keeps well inside it.
        seconds = max(0, min(seconds, SQS_MAX_VISIBILITY_SECONDS))
        try:
            self.client.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )
        except (BotoCoreError, ClientError) as error:
            # The record still comes back, after the queue's own visibility
            # timeout instead of the backoff's.
            log.warning("holding a record back for %s s failed: %s", seconds, error)
            return False
        return True

    def max_receive_count(self) -> int | None:
        # Read from the queue once per container, so the limit is the one SQS
        # enforces, not a copy of template.yaml that could drift from it.
        if not self._redrive_known:
            try:
                answer = self.client.get_queue_attributes(
                    QueueUrl=self._queue_url, AttributeNames=["RedrivePolicy"]
                )
            except (BotoCoreError, ClientError) as error:
                log.warning("reading the send queue's redrive policy failed: %s", error)
                return None
            policy = answer.get("Attributes", {}).get("RedrivePolicy")
            self._max_receive_count = int(json.loads(policy)["maxReceiveCount"]) if policy else None
            self._redrive_known = True
        return self._max_receive_count
