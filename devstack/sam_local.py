"""`make sam-env`: what `sam local invoke` needs to run a function against the local stack.

Everything is driven by template.yaml, so a function added there is covered
without a change here:

- ``.local/env.json`` for ``sam local invoke --env-vars``: for every function,
  every variable the template declares for it (Globals and its own), with the
  value the running local stack (`make dev`) gave it, read from
  ``.local/function-env.json``, which the runner writes at start. Addresses
  are rewritten as a container sees the host (``host.docker.internal``);
  TEMPLATES_DIR stays the layer's path.
- ``.local/events/<function>/*.json``: each committed event of
  ``events/<function>/`` (the function's CodeUri folder name), stamped with
  the demo client's key (``/v1``), the admin token (``/admin``), the local
  webhook keys (provider signatures, the local SNS topic) and the id of a
  real message in place of the placeholder id the committed events carry.

The committed events keep placeholders: credentials never enter git.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.atomic_file import write_atomically
from devstack.demo_client import DEMO_RECIPIENT, DEMO_TEMPLATE, DevCredentials
from devstack.template import FunctionSpec, StackSpec
from mailroom.adapters.webhooks.ses import lambda_envelope
from mailroomctl.local_webhooks import LOCAL_SES_TOPIC_ARN, LocalWebhookKeys

# The message id the committed events carry; stamped with a real one.
PLACEHOLDER_MESSAGE_ID = "0b7f8e2a-4c1d-4e5f-9a6b-7c8d9e0f1a2b"
DOCKER_HOST = "host.docker.internal"
# Variables whose container value is the template's, not the runner's.
CONTAINER_TEMPLATE_VALUES = frozenset({"TEMPLATES_DIR"})
CONTAINER_VALUES = {
    # In a Lambda-like container the tracer and metrics print noise.
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
}
_LOOPBACK = re.compile(r"(?<![\w.-])(127\.0\.0\.1|localhost|0\.0\.0\.0)(?![\w.-])")


class SamEnvError(Exception):
    """The local stack is not running or not reachable; the message says what to do."""


def declared_variables(stack: StackSpec, function: FunctionSpec) -> list[str]:
    """The variables the template declares for ``function``: sam local sets only these."""
    return sorted({*stack.environment, *function.environment})


def write_function_environment(stack: StackSpec, path: Path) -> None:
    """The runner's values of every declared variable (and the AWS ones), for `make sam-env`."""
    names = {name for spec in stack.functions for name in declared_variables(stack, spec)}
    names |= {"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    snapshot = {name: os.environ[name] for name in sorted(names) if name in os.environ}
    path.parent.mkdir(parents=True, exist_ok=True)
    # It holds the stack's secrets: readable by its owner only.
    write_atomically(path, (json.dumps(snapshot, indent=2) + "\n").encode(), mode=0o600)


def env_vars_file(
    stack: StackSpec, snapshot: dict[str, str], *, container_host: str = DOCKER_HOST
) -> dict[str, dict[str, str]]:
    """``--env-vars`` content: one object per function logical id."""
    answer: dict[str, dict[str, str]] = {}
    for function in stack.functions:
        values: dict[str, str] = {}
        for name in declared_variables(stack, function):
            template_value = stack.intrinsics.resolve(
                function.environment.get(name, stack.environment.get(name))
            )
            if name in CONTAINER_VALUES:
                values[name] = CONTAINER_VALUES[name]
            elif name in CONTAINER_TEMPLATE_VALUES and template_value is not None:
                values[name] = template_value
            elif name in snapshot:
                values[name] = _LOOPBACK.sub(container_host, snapshot[name])
            elif template_value is not None:
                values[name] = template_value
        answer[function.logical_id] = values
    return answer


# The parameters `make deploy-local` passes, from the local stack's values.
DEPLOY_PARAMETERS = {
    "DatabaseUrl": "DATABASE_URL",
    "RedisUrl": "REDIS_URL",
    "AdminTokenSha256": "ADMIN_TOKEN_SHA256",
    "TemplateCodeSigningKey": "TEMPLATE_CODE_SIGNING_KEY",
    "SecretsEncryptionKeys": "SECRETS_ENCRYPTION_KEYS",
    "SmtpHost": "SMTP_HOST",
    "SmtpPort": "SMTP_PORT",
    "SmtpSecurity": "SMTP_SECURITY",
}
# LocalStack's own name for itself inside the Lambda containers it starts.
LOCALSTACK_FROM_LAMBDA = "http://localhost.localstack.cloud:4566"


def deploy_parameters(snapshot: dict[str, str], *, container_host: str = DOCKER_HOST) -> str:
    """`--parameter-overrides` for LocalStack: Key=Value pairs, addresses as containers see them."""
    pairs = [
        f"{name}={_LOOPBACK.sub(container_host, snapshot[variable])}"
        for name, variable in DEPLOY_PARAMETERS.items()
        if snapshot.get(variable)
    ]
    pairs.append(f"AwsEndpointUrl={LOCALSTACK_FROM_LAMBDA}")
    return " ".join(pairs)


@dataclass(frozen=True, slots=True)
class Stamp:
    credentials: DevCredentials
    keys: LocalWebhookKeys
    message_id: str | None = None


def committed_events(stack: StackSpec, events_dir: Path) -> list[tuple[FunctionSpec, list[Path]]]:
    """Every function with its events/<function>/*.json, in template order."""
    return [
        (function, sorted((events_dir / function.event_folder).glob("*.json")))
        for function in stack.functions
    ]


def stamp_event(event: dict[str, Any], stamp: Stamp) -> dict[str, Any]:
    """``event`` as it would arrive from the local stack's callers; the input is not changed."""
    text = json.dumps(event)
    if stamp.message_id is not None:
        text = text.replace(PLACEHOLDER_MESSAGE_ID, stamp.message_id)
    stamped: dict[str, Any] = json.loads(text)
    if "httpMethod" in stamped:
        _stamp_api_event(stamped, stamp)
    for record in stamped.get("Records") or []:
        if isinstance(record, dict) and isinstance(record.get("Sns"), dict):
            signed = stamp.keys.sign_sns(lambda_envelope(record["Sns"]))
            signed["SigningCertUrl"] = signed.pop("SigningCertURL")
            record["Sns"] = signed
    return stamped


def is_stamped(event: dict[str, Any], stamp: Stamp) -> bool:
    """Whether ``event`` carries the local stack's credentials (for the test that checks it)."""
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    path = str(event.get("path", ""))
    if path.startswith("/v1"):
        return headers.get("x-api-key") == stamp.credentials.api_key
    if path.startswith("/admin"):
        return headers.get("authorization") == f"Bearer {stamp.credentials.admin_token}"
    return True


def _stamp_api_event(event: dict[str, Any], stamp: Stamp) -> None:
    path = str(event.get("path", ""))
    body = event.get("body")
    if path.startswith("/v1"):
        _set_headers(
            event,
            {"X-Api-Key": stamp.credentials.api_key, "X-Api-Secret": stamp.credentials.api_secret},
        )
    elif path.startswith("/admin"):
        _set_headers(event, {"Authorization": f"Bearer {stamp.credentials.admin_token}"})
    elif path == "/webhooks/sendgrid" and isinstance(body, str):
        _set_headers(event, stamp.keys.sendgrid_headers(body.encode()))
    elif path == "/webhooks/mailgun" and isinstance(body, str):
        payload = json.loads(body)
        payload["signature"] = stamp.keys.mailgun_signature()
        event["body"] = json.dumps(payload)
    elif path == "/webhooks/ses" and isinstance(body, str):
        event["body"] = json.dumps(stamp.keys.sign_sns(json.loads(body)))
        _set_headers(event, {"x-amz-sns-topic-arn": LOCAL_SES_TOPIC_ARN})


def _set_headers(event: dict[str, Any], headers: dict[str, str]) -> None:
    for name, value in headers.items():
        for mapping_name in ("headers", "multiValueHeaders"):
            mapping = event.get(mapping_name)
            if not isinstance(mapping, dict):
                mapping = event[mapping_name] = {}
            for key in [key for key in mapping if key.lower() == name.lower()]:
                del mapping[key]
            mapping[name] = value if mapping_name == "headers" else [value]


def write_stamped_events(
    stack: StackSpec, events_dir: Path, out_dir: Path, stamp: Stamp
) -> list[Path]:
    written: list[Path] = []
    for function, paths in committed_events(stack, events_dir):
        for path in paths:
            target = out_dir / function.event_folder / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            stamped = stamp_event(json.loads(path.read_text(encoding="utf-8")), stamp)
            write_atomically(target, (json.dumps(stamped, indent=2) + "\n").encode(), mode=0o600)
            written.append(target)
    return written


def store_inbound_mail(s3: Any, events_dir: Path, bucket: str, prefix: str) -> int:
    """Put each SES receiving event's mail where its receipt rule would have stored it.

    An SES receipt event carries no mail: the rule's S3 action stored it
    under ``prefix + messageId``. The mail beside the event (``<event>.eml``,
    a real bounce from tests/fixtures/bounces) goes there, so the inbound
    function finds and parses it as it would in AWS.
    """
    stored = 0
    for path in sorted(events_dir.glob("*/*.json")):
        mail = path.with_suffix(".eml")
        if not mail.is_file():
            continue
        for record in json.loads(path.read_text(encoding="utf-8")).get("Records") or []:
            message_id = ((record.get("ses") or {}).get("mail") or {}).get("messageId")
            if message_id:
                s3.put_object(Bucket=bucket, Key=f"{prefix}{message_id}", Body=mail.read_bytes())
                stored += 1
    return stored


def send_demo_message(credentials: DevCredentials, props: dict[str, Any]) -> str:
    """POST /v1/send to the running stack; the id of the message it accepted."""
    body = json.dumps({"template": DEMO_TEMPLATE, "to": DEMO_RECIPIENT, "props": props}).encode()
    request = urllib.request.Request(  # noqa: S310 - the local stack's own API
        credentials.api_url.rstrip("/") + "/v1/send",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Api-Key": credentials.api_key,
            "X-Api-Secret": credentials.api_secret,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return str(json.loads(response.read())["id"])
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        raise SamEnvError(
            f"the local stack at {credentials.api_url} did not accept a send ({error}); "
            "is `make dev` running?"
        ) from error


def main(argv: Iterable[str] | None = None) -> int:
    from devstack.settings import REPO_ROOT, DevstackSettings
    from devstack.template import TemplateError, load_stack

    parser = argparse.ArgumentParser(prog="make sam-env", description=__doc__.splitlines()[0])
    parser.add_argument("--container-host", default=DOCKER_HOST)
    args = parser.parse_args(list(argv) if argv is not None else None)
    settings = DevstackSettings()
    try:
        stack = load_stack(
            settings.template_path, stack_name=settings.stack_name, region=settings.aws_region
        )
        snapshot = json.loads(settings.function_environment_path.read_text(encoding="utf-8"))
        credentials = DevCredentials.read(settings.credentials_path)
        if credentials is None:
            raise SamEnvError(f"no credentials in {settings.credentials_path}")
        sample = REPO_ROOT / "templates" / DEMO_TEMPLATE / "sample.json"
        message_id = send_demo_message(credentials, json.loads(sample.read_text()))
    except (OSError, ValueError, TemplateError, SamEnvError) as error:
        print(f"make sam-env: {error}", file=sys.stderr)
        print("start the local stack first (`make dev`), then run this again", file=sys.stderr)
        return 1
    local = settings.local_path
    env_file = local / "env.json"
    content = env_vars_file(stack, snapshot, container_host=args.container_host)
    write_atomically(env_file, (json.dumps(content, indent=2) + "\n").encode(), mode=0o600)
    stamp = Stamp(
        credentials=credentials,
        keys=LocalWebhookKeys.load_or_create(settings.webhook_keys_path),
        message_id=message_id,
    )
    written = write_stamped_events(stack, REPO_ROOT / "events", local / "events", stamp)
    if snapshot.get("INBOUND_BUCKET"):
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=snapshot.get("AWS_ENDPOINT_URL") or None,
            region_name=settings.aws_region,
        )
        store_inbound_mail(
            s3, REPO_ROOT / "events", snapshot["INBOUND_BUCKET"], snapshot.get("INBOUND_PREFIX", "")
        )
    params = local / "local-params"
    write_atomically(params, (deploy_parameters(snapshot) + "\n").encode(), mode=0o600)
    print(f"wrote {env_file} ({len(content)} functions) and {len(written)} events under")
    print(f"  {local / 'events'} (message {message_id}); signed webhook events expire in 5 min.")
    print(f"and {params} for `make deploy-local` (LocalStack with Docker).")
    print("e.g. AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test .ci/sam.sh local invoke \\")
    print(f"  StatusFunction --env-vars {env_file} -e {local}/events/status/health.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
