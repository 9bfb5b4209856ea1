"""One image, many roles: `python -m hosting` outside Lambda, without Docker (issue 22).

SERVICE_ROLE=all runs the api (gunicorn, several processes), the worker
(long-polling SQS, here moto) and the scheduler as child processes. A send
through the api must reach the SMTP sink through the worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.adapters.secrets import Argon2SecretHasher
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.services.clients import register_client
from tests.integration.conftest import SmtpSink, free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((REPO_ROOT / "templates" / "welcome" / "sample.json").read_text())


def _request(method: str, url: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _wait(what: str, check: Any, timeout: float, log: Path, host: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and host.poll() is None:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.3)
    pytest.fail(f"no {what} within {timeout} s\n{log.read_text()[-5000:]}")


def test_role_all_serves_the_api_and_sends_through_the_worker(
    database_url: str,
    database: Database,
    redis_url: str,
    aws: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    # GIVEN a client, and the host's environment as a container would get it
    registered = register_client(
        SqlUnitOfWork(database),
        Argon2SecretHasher(time_cost=2, memory_cost_kib=19 * 1024, parallelism=1),
        name="hosting-demo",
    )
    port = free_port()
    environment = {
        **os.environ,
        "SERVICE_ROLE": "all",
        "MAILROOM_API_BIND": f"127.0.0.1:{port}",
        "MAILROOM_API_WORKERS": "2",
        "MAILROOM_STACK_NAME": "mailroom-hosting-test",
        "MAILROOM_PROVISION_QUEUES": "true",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SMTP_HOST": smtp_sink.host,
        "SMTP_PORT": str(smtp_sink.port),
        "SMTP_SECURITY": "none",
        "ADMIN_TOKEN_SHA256": hashlib.sha256(b"t" * 40).hexdigest(),
        "SECRETS_ENCRYPTION_KEYS": SecretKeyring.generate_setting(),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    log = tmp_path / "hosting.log"
    with log.open("wb") as output:
        host = subprocess.Popen(
            [sys.executable, "-m", "hosting"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        api = f"http://127.0.0.1:{port}"
        _wait("healthy api", lambda: _request("GET", f"{api}/health", {})[0] == 200, 90, log, host)
        # THEN the api runs under gunicorn with the processes asked for
        gunicorn = [p for p in psutil.Process(host.pid).children(recursive=True) if p.children()]
        assert any(len(p.children()) == 2 for p in gunicorn), log.read_text()[-3000:]
        # WHEN a message is sent through the api
        status, answer = _request(
            "POST",
            f"{api}/v1/send",
            {
                "Content-Type": "application/json",
                "X-Api-Key": registered.api_key,
                "X-Api-Secret": registered.api_secret,
            },
            {"template": "welcome", "to": "ada@example.com", "props": SAMPLE},
        )
        assert status == 202, answer
        # THEN the worker role takes it off the queue and sends it
        _wait("the mail at the sink", lambda: smtp_sink.received, 60, log, host)
        assert smtp_sink.received[0].recipients == ["ada@example.com"]
        # ...and the api serves Prometheus's /metrics (issue 23), in its own text format
        with urllib.request.urlopen(f"{api}/metrics", timeout=10) as response:
            families = {
                family.name for family in text_string_to_metric_families(response.read().decode())
            }
        assert "mailroom_emails_queued" in families, sorted(families)
    finally:
        # ...and SIGTERM stops every role cleanly
        host.send_signal(signal.SIGTERM)
        code = host.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
