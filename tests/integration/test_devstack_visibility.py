"""The local runner's SQS poller keeps the visibility a handler set, as Lambda does.

The worker holds a failed record back by its backoff (ChangeMessageVisibility)
and reports it in batchItemFailures; Lambda's event source mapping leaves such
a record alone. The poller must too, or retries would come back at the
queue's own visibility timeout instead of on the backoff schedule.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.aws import ProvisionedQueue
from devstack.lambda_runtime import LocalFunction
from devstack.sqs_poller import QueuePoller
from devstack.template import FunctionSpec, SqsTrigger

pytestmark = pytest.mark.integration


def test_a_record_the_handler_held_back_stays_invisible(aws: str) -> None:
    # GIVEN a queue whose own visibility timeout is 0: a failed record would be
    # visible again at once unless the handler's change sticks
    sqs = boto3.client("sqs", region_name="us-east-1")
    name = f"devstack-visibility-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sqs.send_message(QueueUrl=url, MessageBody='{"message_id": "x"}')
    held_back: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # What the worker does on a retry: hold the record back, report it failed.
        record = event["Records"][0]
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=300
        )
        held_back.append(record["messageId"])
        return {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}

    trigger = SqsTrigger("Send", "SendQueue", 10, 0, True, True)
    spec = FunctionSpec("Worker", Path("."), "app.handler", "python3.12", 30, 512, (), (trigger,))
    poller = QueuePoller(
        sqs,
        ProvisionedQueue("SendQueue", name, url, arn, 0),
        trigger,
        LocalFunction(spec, handler, region="us-east-1", lock=threading.Lock()),
        region="us-east-1",
    )
    # WHEN the poller runs one batch through the handler
    poller._deliver(poller._receive(10, 0))
    # THEN the handler saw the record, and it is neither deleted nor visible again
    assert len(held_back) == 1
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
