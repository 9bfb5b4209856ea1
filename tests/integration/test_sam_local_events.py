"""Every function's every event answers through the entry point `sam local invoke` uses (issue 22).

Driven by template.yaml: a function added there must have events under
events/<function>/, and they run here too. Each function runs in a process of
its own (as a container would) through devstack.sam_invoke, with the
variables of an env.json built by `make sam-env`'s own code from a local
stack's values (real PostgreSQL, Redis, moto, an SMTP sink), and events
stamped by the same code.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.aws import provision_queues
from devstack.demo_client import DevCredentials
from devstack.sam_local import (
    PLACEHOLDER_MESSAGE_ID,
    Stamp,
    committed_events,
    declared_variables,
    env_vars_file,
    is_stamped,
    stamp_event,
    store_inbound_mail,
)
from devstack.template import StackSpec, load_stack
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.adapters.secrets import Argon2SecretHasher
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.services.clients import register_client
from mailroomctl.local_webhooks import LOCAL_SES_TOPIC_ARN, LocalWebhookKeys
from tests.integration.conftest import SmtpSink

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "local-admin-token-" + "x" * 32


def _stack() -> StackSpec:
    return load_stack(
        REPO_ROOT / "template.yaml", stack_name="mailroom-samtest", region="us-east-1"
    )


def test_every_function_of_the_template_has_events() -> None:
    # GIVEN the template's functions WHEN their events/<function>/ folders are listed
    missing = [
        f.logical_id for f, paths in committed_events(_stack(), REPO_ROOT / "events") if not paths
    ]
    # THEN none is without events
    assert missing == []


def test_env_json_sets_only_declared_variables_with_container_addresses() -> None:
    # GIVEN a local stack's values on the loopback address
    stack = _stack()
    snapshot = {
        "DATABASE_URL": "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "SMTP_HOST": "localhost",
        "TEMPLATES_DIR": "/home/dev/mailroom/templates",
        "NOT_DECLARED": "dropped",
    }
    # WHEN env.json is built
    content = env_vars_file(stack, snapshot)
    # THEN every function gets its declared variables, as a container reaches the host
    assert set(content) == {f.logical_id for f in stack.functions}
    for function in stack.functions:
        values = content[function.logical_id]
        assert set(values) <= set(declared_variables(stack, function))
        assert values["DATABASE_URL"] == (
            "postgresql+pg8000://postgres@host.docker.internal:5432/mailroom"
        )
        assert values["AWS_ENDPOINT_URL"] == "http://host.docker.internal:4566"
        assert values["SMTP_HOST"] == "host.docker.internal"
        # the layer's path, not the developer's checkout
        assert values["TEMPLATES_DIR"] == "/opt/mailroom-templates"
        assert "NOT_DECLARED" not in values


def _invoke(function: str, env_file: Path, events: list[Path]) -> list[Any]:
    answer = subprocess.run(
        [sys.executable, "-m", "devstack.sam_invoke", function, "--env-vars", str(env_file)]
        + [arg for path in events for arg in ("-e", str(path))],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'shared'}:{REPO_ROOT}"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    lines = [line for line in answer.stdout.splitlines() if line.startswith('{"event"')]
    return [json.loads(line)["result"] for line in lines]


def _check(result: Any, event: dict[str, Any], where: str) -> None:
    if "httpMethod" in event:
        assert 200 <= result["statusCode"] < 300, f"{where}: {result}"
    elif event.get("Records") and "Sns" in event["Records"][0]:
        assert result["refused"] == 0, f"{where}: {result}"
    elif event.get("Records") and event["Records"][0].get("eventSource") == "aws:ses":
        # SES receiving: one outcome per receipt, none skipped for want of the stored mail.
        assert "errorMessage" not in result, f"{where}: {result}"
        assert sum(result.values()) == len(event["Records"]), f"{where}: {result}"
        assert "skipped" not in result, f"{where}: {result}"
    elif event.get("Records"):
        assert result["batchItemFailures"] == [], f"{where}: {result}"
    else:
        assert isinstance(result, dict), f"{where}: {result}"


def test_every_event_answers_through_the_sam_local_entry_point(
    database_url: str,
    database: Database,
    redis_url: str,
    aws: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    # GIVEN a local stack's values: queues in moto, PostgreSQL, Redis, an SMTP sink
    stack = _stack()
    sqs = boto3.client("sqs", region_name="us-east-1")
    queues = provision_queues(sqs, stack.queues)
    keys = LocalWebhookKeys.generate()
    send_queue = next(q for q in queues.values() if q.name.endswith("-send"))
    dlq = next(q for q in queues.values() if q.name.endswith("-send-dlq"))
    planner = next(q for q in queues.values() if q.name.endswith("-planner"))
    webhook_queue = next(q for q in queues.values() if q.name.endswith("-webhooks"))
    snapshot = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "QUEUE_URL": send_queue.url,
        "DEAD_LETTER_QUEUE_URL": dlq.url,
        "PLANNER_QUEUE_URL": planner.url,
        "WEBHOOK_QUEUE_URL": webhook_queue.url,
        "AWS_ENDPOINT_URL": aws,
        "SMTP_HOST": smtp_sink.host,
        "SMTP_PORT": str(smtp_sink.port),
        "SMTP_SECURITY": "none",
        "SMTP_USERNAME": "",
        "SMTP_PASSWORD": "",
        "TEMPLATES_DIR": str(REPO_ROOT / "templates"),
        "ADMIN_TOKEN_SHA256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        "TEMPLATE_CODE_SIGNING_KEY": "k" * 40,
        "SECRETS_ENCRYPTION_KEYS": SecretKeyring.generate_setting(),
        "SNS_TOPIC_ARNS": LOCAL_SES_TOPIC_ARN,
        "INBOUND_BUCKET": "sam-local-inbound",
        "INBOUND_PREFIX": "inbound/",
        **keys.function_environment(),
    }
    # ...and the mail SES receiving stored for the inbound function's events
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="sam-local-inbound")
    assert store_inbound_mail(s3, REPO_ROOT / "events", "sam-local-inbound", "inbound/") >= 1
    # ...its env.json as `make sam-env` writes it (addresses unchanged: no container here)
    env_file = tmp_path / "env.json"
    content = env_vars_file(stack, snapshot, container_host="127.0.0.1")
    # the templates of this checkout, where the layer's path does not exist
    for values in content.values():
        values["TEMPLATES_DIR"] = snapshot["TEMPLATES_DIR"]
    env_file.write_text(json.dumps(content))
    # ...and a client whose key stamps the events
    registered = register_client(
        SqlUnitOfWork(database),
        Argon2SecretHasher(time_cost=2, memory_cost_kib=19 * 1024, parallelism=1),
        name="sam-local-demo",
    )
    credentials = DevCredentials(
        api_url="http://unused",
        api_key=registered.api_key,
        api_secret=registered.api_secret,
        admin_token=ADMIN_TOKEN,
    )
    by_function = {
        f.logical_id: (f, paths) for f, paths in committed_events(stack, REPO_ROOT / "events")
    }

    def stamped(paths: list[Path], message_id: str | None) -> list[tuple[Path, dict[str, Any]]]:
        stamp = Stamp(credentials=credentials, keys=keys, message_id=message_id)
        out: list[tuple[Path, dict[str, Any]]] = []
        for path in paths:
            event = stamp_event(json.loads(path.read_text()), stamp)
            assert is_stamped(event, stamp), path
            target = tmp_path / path.parent.name / path.name
            target.parent.mkdir(exist_ok=True)
            target.write_text(json.dumps(event))
            out.append((target, event))
        return out

    # WHEN the send function's events run first (they make the message the others name)
    send_spec, send_paths = by_function.pop("SendFunction")
    send_events = stamped(send_paths, None)
    results = _invoke(send_spec.logical_id, env_file, [path for path, _ in send_events])
    for (path, event), result in zip(send_events, results, strict=True):
        _check(result, event, str(path))
    message_id = json.loads(results[0]["body"])["id"]
    assert message_id != PLACEHOLDER_MESSAGE_ID

    # ...then every other function's events, the worker before the status reads
    order = sorted(by_function, key=lambda name: name != "WorkerFunction")
    for name in order:
        function, paths = by_function[name]
        events = stamped(paths, message_id)
        answers = _invoke(function.logical_id, env_file, [path for path, _ in events])
        # THEN each answers as documented: 2xx for API events, no failed records
        assert len(answers) == len(events)
        for (path, event), result in zip(events, answers, strict=True):
            _check(result, event, f"{name} {path.name}")

    # ...and the worker's event really sent the message through the SMTP sink
    assert [mail.recipients for mail in smtp_sink.received] == [["ada@example.com"]]
