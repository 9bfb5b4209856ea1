"""The AWS side: moto on 127.0.0.1 (unless AWS_ENDPOINT_URL names another), and the queues."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from devstack.template import QueueSpec

# moto accepts any credentials; fixed dummies make sure nothing the developer
# has configured for real AWS is ever sent.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "devstack",
    "AWS_SECRET_ACCESS_KEY": "devstack",
}
_QUEUE_EXISTS_CODES = {
    "QueueAlreadyExists",
    "QueueNameExists",
    "AWS.SimpleQueueService.QueueNameExists",
}


class EmbeddedAws:
    """moto's server in a thread, on a free port of 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        # Imported here: the container roles (hosting/) use this module's
        # queue provisioning, and their image has no moto.
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self.endpoint_url

    def stop(self) -> None:
        self._server.stop()


@dataclass(frozen=True, slots=True)
class ProvisionedQueue:
    logical_id: str
    name: str
    url: str
    arn: str
    visibility_timeout_seconds: int


def provision_queues(
    sqs: Any, queues: dict[str, QueueSpec], *, visibility_timeout_seconds: int | None = None
) -> dict[str, ProvisionedQueue]:
    """Create every queue of the template, dead-letter queues first (redrive needs their ARN)."""
    created: dict[str, ProvisionedQueue] = {}
    pending = dict(queues)
    while pending:
        ready = [
            spec
            for spec in pending.values()
            if spec.dead_letter_queue is None or spec.dead_letter_queue in created
        ]
        if not ready:
            raise ValueError(f"queues {sorted(pending)} name each other as dead-letter queues")
        for spec in ready:
            attributes = dict(spec.attributes)
            if visibility_timeout_seconds is not None:
                attributes["VisibilityTimeout"] = str(visibility_timeout_seconds)
            if spec.dead_letter_queue is not None:
                attributes["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": created[spec.dead_letter_queue].arn,
                        "maxReceiveCount": spec.max_receive_count,
                    }
                )
            url = _create_queue(sqs, spec.name, attributes)
            answer = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn", "VisibilityTimeout"]
            )
            created[spec.logical_id] = ProvisionedQueue(
                logical_id=spec.logical_id,
                name=spec.name,
                url=url,
                arn=answer["Attributes"]["QueueArn"],
                visibility_timeout_seconds=int(answer["Attributes"]["VisibilityTimeout"]),
            )
            del pending[spec.logical_id]
    return created


def _create_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except ClientError as error:
        # A long-lived endpoint (LocalStack) may hold the queue from an earlier
        # run with other attributes: bring it in line with the template.
        if error.response.get("Error", {}).get("Code") not in _QUEUE_EXISTS_CODES:
            raise
    url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url
