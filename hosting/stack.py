"""The template's functions and queues, as a long-running host sees them."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from devstack.aws import ProvisionedQueue, provision_queues
from devstack.lambda_runtime import LocalFunction, load_function
from devstack.template import StackSpec, load_stack

log = logging.getLogger("hosting")

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class HostSettings:
    """MAILROOM_* variables of the host itself; the functions read theirs (mailroom.config)."""

    role: str
    template: Path
    stack_name: str
    region: str
    api_bind: str
    api_workers: int
    provision_queues: bool

    @classmethod
    def from_environment(cls) -> HostSettings:
        environ = os.environ
        return cls(
            role=environ.get("SERVICE_ROLE", "all").strip().lower(),
            template=Path(environ.get("MAILROOM_TEMPLATE", REPO_ROOT / "template.yaml")),
            stack_name=environ.get("MAILROOM_STACK_NAME", "mailroom"),
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            api_bind=environ.get("MAILROOM_API_BIND", "0.0.0.0:8080"),
            api_workers=int(environ.get("MAILROOM_API_WORKERS", "4")),
            # Create the queues (an SQS-compatible endpoint with nothing
            # deployed, as in compose.yml); on AWS they come from a stack.
            provision_queues=environ.get("MAILROOM_PROVISION_QUEUES", "false").lower() == "true",
        )


def load(settings: HostSettings) -> StackSpec:
    return load_stack(settings.template, stack_name=settings.stack_name, region=settings.region)


def queues(settings: HostSettings, stack: StackSpec) -> dict[str, ProvisionedQueue]:
    """The template's queues at the configured endpoint, created first if asked to."""
    sqs = boto3.client("sqs", region_name=settings.region)
    if settings.provision_queues:
        return provision_queues(sqs, stack.queues)
    found: dict[str, ProvisionedQueue] = {}
    for spec in stack.queues.values():
        url = sqs.get_queue_url(QueueName=spec.name)["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn", "VisibilityTimeout"]
        )["Attributes"]
        found[spec.logical_id] = ProvisionedQueue(
            spec.logical_id,
            spec.name,
            url,
            attributes["QueueArn"],
            int(attributes["VisibilityTimeout"]),
        )
    return found


def export_environment(stack: StackSpec, found: dict[str, ProvisionedQueue]) -> None:
    """The template's variables, for those the host's environment does not set itself.

    Queue URLs and ARNs resolve to the queues found; anything else the
    template computes from resources (topics) must come from the environment.
    """
    intrinsics = stack.intrinsics
    for queue in found.values():
        intrinsics.refs[queue.logical_id] = queue.url
        intrinsics.attributes[(queue.logical_id, "Arn")] = queue.arn
        intrinsics.attributes[(queue.logical_id, "QueueName")] = queue.name
    declared: dict[str, Any] = dict(stack.environment)
    for function in stack.functions:
        declared.update(function.environment)
    # Functions share the process; they read the variables once, on first use.
    os.environ.setdefault("TEMPLATES_DIR", str(REPO_ROOT / "templates"))
    # Not Lambda: no X-Ray daemon to trace to, no CloudWatch to read EMF lines.
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    for name, raw in declared.items():
        value = intrinsics.resolve(raw)
        if value is not None and name not in os.environ:
            os.environ[name] = value


def functions(stack: StackSpec, region: str) -> dict[str, LocalFunction]:
    """Every function's handler, imported once; invocations take turns, as in one container."""
    lock = threading.Lock()
    return {
        spec.logical_id: load_function(spec, region=region, lock=lock) for spec in stack.functions
    }
