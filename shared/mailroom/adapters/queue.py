"""The send queue: the API puts message ids on it, the worker takes them off."""

from __future__ import annotations

import abc
import json
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailroom.adapters import tracing
from mailroom.domain.errors import DependencyUnavailable

TRACE_ID_ATTRIBUTE = "trace_id"


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
                    QueueUrl=self._queue_url,
                    MessageBody=json.dumps({"message_id": str(message_id)}),
                    MessageAttributes=attributes,
                )
        except (BotoCoreError, ClientError) as error:
            raise DependencyUnavailable(f"the send queue refused the message: {error}") from error
