"""A webhook dispatcher in its own process, for the test that kills it mid-batch.

``python -m tests.integration.webhook_dispatcher_process DATABASE_URL QUEUE_URL KEYRING``
receives from the queue and dispatches until it is killed, as the SQS
trigger and the dispatcher function would.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import boto3

from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.adapters.webhook_queue import SqsWebhookQueue, delivery_ids_of
from mailroom.adapters.webhook_sender import Urllib3WebhookSender
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.services.outbound_webhooks import Dispatcher


def main(database_url: str, queue_url: str, keyring: str) -> None:
    database = Database(database_url, pool_size=2)
    dispatcher = Dispatcher(
        uow=lambda: SqlUnitOfWork(database),
        sender=Urllib3WebhookSender(allow_private=True),
        queue=SqsWebhookQueue(queue_url, "us-east-1"),
        keyring=SecretKeyring.from_setting(keyring),
        allow_private=True,
        claim_lease=timedelta(seconds=2),
    )
    sqs = boto3.client("sqs", region_name="us-east-1")
    print("ready", flush=True)
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = answer.get("Messages", [])
        ids = [i for m in messages for i in delivery_ids_of(m["Body"])]
        dispatcher.dispatch(ids)
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


if __name__ == "__main__":
    main(*sys.argv[1:4])
