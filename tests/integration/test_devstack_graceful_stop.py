"""Stopping the local runner's poller mid-batch: the batch finishes, or is left for redelivery.

Never half-recorded: the worker writes a batch's outcomes in one transaction
(services/delivery.py), and the poller deletes records only after the
handler returned.
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


class GatedHandler:
    """A worker stand-in that waits at a gate mid-batch."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.finished: list[str] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.started.set()
        self.gate.wait(timeout=30)
        self.finished.extend(record["messageId"] for record in event["Records"])
        return {"batchItemFailures": []}


def _poller(handler: GatedHandler) -> tuple[Any, str, QueuePoller]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    name = f"devstack-stop-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    for index in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f'{{"message_id": "{index}"}}')
    trigger = SqsTrigger("Send", "SendQueue", 10, 0, True, True)
    spec = FunctionSpec("Worker", Path("."), "app.handler", "python3.12", 30, 512, (), (trigger,))
    poller = QueuePoller(
        sqs,
        ProvisionedQueue("SendQueue", name, url, arn, 30),
        trigger,
        LocalFunction(spec, handler, region="us-east-1", lock=threading.Lock()),
        region="us-east-1",
    )
    return sqs, url, poller


def _counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def test_a_stop_mid_batch_lets_the_batch_finish_and_acknowledges_it(aws: str) -> None:
    # GIVEN a poller whose handler is in the middle of a batch
    handler = GatedHandler()
    sqs, url, poller = _poller(handler)
    poller.start()
    assert handler.started.wait(timeout=30)
    # WHEN the runner stops it (SIGTERM), and the batch then completes
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(poller.stop(timeout=30)))
    stopper.start()
    handler.gate.set()
    stopper.join(timeout=60)
    # THEN the stop waited for the whole batch, which was acknowledged
    assert stopped == [True]
    assert len(handler.finished) >= 1
    remaining = sum(_counts(sqs, url))
    assert remaining == 3 - len(handler.finished)


def test_a_batch_still_running_at_the_deadline_is_left_for_redelivery(aws: str) -> None:
    # GIVEN a poller whose handler does not finish in time
    handler = GatedHandler()
    sqs, url, poller = _poller(handler)
    poller.start()
    assert handler.started.wait(timeout=30)
    # WHEN the stop's deadline passes first
    assert poller.stop(timeout=0.2) is False
    # THEN nothing was deleted: the in-flight records are only invisible, and
    # come back after their visibility timeout
    assert sum(_counts(sqs, url)) == 3
    assert handler.finished == []
    handler.gate.set()
