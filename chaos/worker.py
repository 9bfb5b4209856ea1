"""The chaos run's worker process: the local runner's SQS poller feeding WorkerFunction.

Started (and SIGKILLed) by chaos/run.py. Settings come from the environment
exactly as the runner exports them; the queue from CHAOS_QUEUE_URL.
SIGTERM stops it the runner's way: the batch in hand finishes first.

    PYTHONPATH=shared:. python -m chaos.worker
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import boto3

from devstack.aws import ProvisionedQueue
from devstack.lambda_runtime import load_function
from devstack.settings import REPO_ROOT
from devstack.sqs_poller import QueuePoller
from devstack.template import load_stack

REGION = "us-east-1"


def main() -> int:
    stack = load_stack(REPO_ROOT / "template.yaml", stack_name="chaos", region=REGION)
    spec = next(s for s in stack.functions if s.logical_id == "WorkerFunction")
    # The normal priority band's queue (issue 20 added a high and a low band;
    # the chaos run sends without naming a queue, so all its mail is normal).
    (trigger,) = [t for t in spec.sqs_triggers if t.queue == "SendQueue"]
    function = load_function(spec, region=REGION, lock=threading.Lock())
    url = os.environ["CHAOS_QUEUE_URL"]
    queue = ProvisionedQueue(
        logical_id=trigger.queue,
        name=url.rsplit("/", 1)[-1],
        url=url,
        arn=os.environ["CHAOS_QUEUE_ARN"],
        visibility_timeout_seconds=int(os.environ["CHAOS_VISIBILITY_TIMEOUT"]),
    )
    sqs = boto3.client("sqs", region_name=REGION)
    poller = QueuePoller(sqs, queue, trigger, function, region=REGION)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    poller.start()
    stop.wait()
    return 0 if poller.stop(float(spec.timeout_seconds)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
