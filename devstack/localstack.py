"""`make dev-localstack`: the local runner against LocalStack, the template's resources deployed.

1. Use the LocalStack answering at AWS_ENDPOINT_URL (default
   http://127.0.0.1:4566, where compose.yml publishes one); if none answers,
   start one on this host from .venv-localstack (LocalStack needs Python 3.13
   and a venv of its own: `make dev-localstack` builds it) and stop it on exit.
2. Deploy the template's non-Lambda resources (queues with their redrive to
   the DLQ, SNS topics and their policies) as a CloudFormation stack there:
   LocalStack runs Lambda functions only in Docker, so a full `sam deploy`
   would roll back at the first function.
3. Run the functions in-process against it (`python -m devstack`), which
   finds the stack's queues by name.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from devstack.aws import DUMMY_CREDENTIALS
from devstack.settings import REPO_ROOT, DevstackSettings
from devstack.template import CloudFormationLoader

log = logging.getLogger("devstack.localstack")

DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
LOCALSTACK_VENV = REPO_ROOT / ".venv-localstack"
# What a deploy of the template needs, and SES for the SES provider (v1).
SERVICES = "sqs,sns,ses,cloudformation,s3,iam,sts"
START_TIMEOUT_SECONDS = 60
# The resources a CloudFormation stack on LocalStack can hold without Docker.
DEPLOYABLE_TYPES = frozenset(
    {"AWS::SQS::Queue", "AWS::SQS::QueuePolicy", "AWS::SNS::Topic", "AWS::SNS::TopicPolicy"}
)


def answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_on_host(endpoint: str, log_path: Path) -> subprocess.Popen[bytes]:
    """LocalStack from .venv-localstack, listening on ``endpoint``'s port of 127.0.0.1."""
    python = LOCALSTACK_VENV / "bin" / "python"
    if not python.is_file():
        raise RuntimeError(
            f"no LocalStack venv at {LOCALSTACK_VENV}: `make dev-localstack` builds it "
            "(Python 3.13, localstack-core)"
        )
    port = endpoint.rsplit(":", 1)[-1].strip("/")
    environment = {
        **os.environ,
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        # Queue URLs that resolve here (without it they name localhost.localstack.cloud).
        "LOCALSTACK_HOST": f"127.0.0.1:{port}",
        "SQS_ENDPOINT_STRATEGY": "path",
        "SERVICES": SERVICES,
        "DISABLE_EVENTS": "1",
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as output:
        process = subprocess.Popen(  # noqa: S603 - our own venv's interpreter
            [str(python), "-m", "localstack.runtime.main"],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not answers(endpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"LocalStack did not start; see {log_path}")
        time.sleep(0.5)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def resources_template(template_path: Path) -> dict[str, Any]:
    """template.yaml's deployable resources, with the conditions and parameters they use."""
    document = yaml.load(template_path.read_text(encoding="utf-8"), Loader=CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass
    resources = {
        name: resource
        for name, resource in document["Resources"].items()
        if resource.get("Type") in DEPLOYABLE_TYPES
    }
    all_conditions: dict[str, Any] = document.get("Conditions") or {}
    conditions: dict[str, Any] = {}
    pending = [r["Condition"] for r in resources.values() if "Condition" in r]
    pending += _references(resources)
    while pending:
        name = pending.pop()
        if name in conditions or name not in all_conditions:
            continue
        conditions[name] = all_conditions[name]
        pending += [ref for ref in _references(all_conditions[name]) if ref not in conditions]
    parameters = {
        name: spec
        for name, spec in (document.get("Parameters") or {}).items()
        if name in _references({"r": resources, "c": conditions})
    }
    outputs: dict[str, Any] = {}
    for name, resource in resources.items():
        condition = {"Condition": resource["Condition"]} if "Condition" in resource else {}
        if resource["Type"] == "AWS::SQS::Queue":
            outputs[f"{name}Url"] = {"Value": {"Ref": name}, **condition}
            outputs[f"{name}Arn"] = {"Value": {"Fn::GetAtt": [name, "Arn"]}, **condition}
        elif resource["Type"] == "AWS::SNS::Topic":
            outputs[f"{name}Arn"] = {"Value": {"Ref": name}, **condition}
    template: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Mailroom's queues and topics (template.yaml without its functions)",
        "Parameters": parameters,
        "Resources": resources,
        "Outputs": outputs,
    }
    if conditions:
        template["Conditions"] = conditions
    return template


def _references(value: Any) -> list[str]:
    """Names a template fragment refers to: Ref, Sub variables and Condition names."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if (key == "Ref" and isinstance(item, str)) or (
                key == "Condition" and isinstance(item, str)
            ):
                found.append(item)
            elif key == "Fn::Sub":
                text = item if isinstance(item, str) else item[0]
                found += [name.split(".")[0] for name in _sub_names(text)]
                found += _references(item)
            elif key in ("Fn::If",) and isinstance(item, list) and item:
                found.append(str(item[0]))
                found += _references(item[1:])
            else:
                found += _references(item)
    elif isinstance(value, list):
        for item in value:
            found += _references(item)
    return found


def _sub_names(text: str) -> list[str]:
    import re

    return re.findall(r"\$\{([^}!][^}]*)\}", text)


def deploy(cloudformation: Any, stack_name: str, template: dict[str, Any]) -> dict[str, str]:
    """Create or update the stack; its outputs."""
    body = json.dumps(template)
    try:
        cloudformation.describe_stacks(StackName=stack_name)
        exists = True
    except cloudformation.exceptions.ClientError:
        exists = False
    if exists:
        try:
            cloudformation.update_stack(StackName=stack_name, TemplateBody=body)
            cloudformation.get_waiter("stack_update_complete").wait(
                StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        except cloudformation.exceptions.ClientError as error:
            if "No updates are to be performed" not in str(error):
                raise
    else:
        cloudformation.create_stack(StackName=stack_name, TemplateBody=body)
        cloudformation.get_waiter("stack_create_complete").wait(
            StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def main() -> int:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[devstack] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    settings = DevstackSettings()
    endpoint = (settings.aws_endpoint_url or DEFAULT_ENDPOINT).rstrip("/")
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    if answers(endpoint):
        log.info("using the LocalStack answering at %s", endpoint)
    else:
        log.info("no LocalStack at %s; starting one on this host", endpoint)
        try:
            process = start_on_host(endpoint, settings.local_path / "localstack.log")
        except RuntimeError as error:
            log.error("%s", error)
            return 1
        atexit.register(stop, process)
        log.info("LocalStack started (log in %s)", settings.local_path / "localstack.log")
    import boto3

    cloudformation = boto3.client(
        "cloudformation", region_name=settings.aws_region, endpoint_url=endpoint
    )
    outputs = deploy(
        cloudformation, settings.stack_name, resources_template(settings.template_path)
    )
    log.info("stack %s deployed: %s", settings.stack_name, ", ".join(sorted(outputs)))
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    from devstack.runner import main as run

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
