"""Schemathesis over the committed OpenAPI document, against the local runner (issue 14).

Every operation in docs/openapi.json is called with generated requests (the
document's examples, its coverage cases, then random ones), with real
credentials, so authenticated routes are exercised beyond 401. Each answer
must not be a 5xx and must be what the document says: a declared status, the
declared media type and a body that matches the declared schema.

Bounded so it runs in about two minutes here: a fixed seed and a fixed number
of random examples per operation. Run it alone with
``.venv/bin/pytest tests/e2e/test_openapi_fuzz.py``.

It runs schemathesis' own runner (``schemathesis run``) rather than its
pytest plugin: the plugin's per-operation subtests rewrite pytest node
internals that pytest 9.2 no longer has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailroom.domain.api_keys import encode_token
from tests.e2e.harness import REPO_ROOT, SAMPLE_PROPS, Runner, http

pytestmark = pytest.mark.e2e

COMMITTED_DOCUMENT = REPO_ROOT / "docs" / "openapi.json"
SEED = 14
# Random examples per operation in the fuzzing phase; the examples and
# coverage phases add their own, derived from the document.
MAX_EXAMPLES = 40
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    # Beyond the four issue 14 names: Retry-After on a 429 is promised too.
    "response_headers_conformance",
)
PHASES = ("examples", "coverage", "fuzzing")
RUN_TIMEOUT_SECONDS = 600


def _fuzz_client(runner: Runner, admin_token: str) -> dict[str, str]:
    """A client of its own with limits the run cannot reach, so /v1/ answers are not all 429."""
    answer = http(
        "POST",
        f"{runner.api_url}/admin/clients",
        headers={"Authorization": f"Bearer {admin_token}"},
        body={"name": "schemathesis", "rate_limit": 1_000_000, "quota_limit": 1_000_000_000},
    )
    assert answer.status == 201, answer.body
    created: dict[str, str] = answer.json()
    return created


def _message_of(runner: Runner, client: dict[str, str]) -> str:
    """A message of the fuzz client's, so the status routes answer more than 404."""
    answer = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers={"X-Api-Key": client["api_key"], "X-Api-Secret": client["api_secret"]},
        body={"template": "welcome", "to": "ada@example.com", "props": SAMPLE_PROPS},
    )
    assert answer.status == 202, answer.body
    message_id: str = answer.json()["id"]
    return message_id


def _toml_value(value: str | list[str]) -> str:
    return json.dumps(value)  # JSON strings and arrays of them are TOML's too


def _config(runner: Runner, folder: Path) -> Path:
    """A schemathesis.toml: the run's bounds, a credential per security scheme, real ids.

    Path parameters take a real value (a message, a client, a template, a
    provider) half of the time, and so do a send's template and recipient, so
    those routes are exercised beyond 404 and unknown_template.
    """
    admin_token = runner.credentials["admin_token"]
    client = _fuzz_client(runner, admin_token)
    known = {
        "path.message_id": [_message_of(runner, client)],
        # The demo client, not the fuzz client: the run may suspend it.
        "path.client_ref": [runner.credentials["api_key"]],
        "path.name": ["welcome", "receipt"],
        "path.provider": ["ses", "sendgrid", "mailgun"],
        # So /v1/send gets past unknown_template and into rendering and sending.
        "body.template": ["welcome", "receipt"],
        "body.to": ["ada@example.com", "Ada Lovelace <ada@example.com>"],
    }

    lines = [
        f"seed = {SEED}",
        f"base-url = {_toml_value(runner.api_url)}",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        "deterministic = true",
        # Auth goes by the security requirement each operation declares.
        "[auth.openapi.apiKey]",
        f"api_key = {_toml_value(client['api_key'])}",
        "[auth.openapi.apiSecret]",
        f"api_key = {_toml_value(client['api_secret'])}",
        # The same key as a Bearer token, for operations schemathesis sends that way.
        "[auth.openapi.clientToken]",
        f"bearer = {_toml_value(encode_token(client['api_key'], client['api_secret']))}",
        "[auth.openapi.adminToken]",
        f"bearer = {_toml_value(admin_token)}",
    ]
    dictionaries = {binding: binding.replace(".", "_") for binding in known}
    for binding, values in known.items():
        lines += [f"[dictionaries.{dictionaries[binding]}]", f"values = {_toml_value(values)}"]
    lines.append("[parameters]")
    lines += [
        f"{_toml_value(binding)} = {{ dictionary = {_toml_value(name)}, probability = 0.5 }}"
        for binding, name in dictionaries.items()
    ]
    path = folder / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_every_answer_is_what_the_document_says(runner: Runner, tmp_path: Path) -> None:
    # GIVEN the committed document and the local runner, with a client and the admin token
    config = _config(runner, tmp_path)
    # WHEN schemathesis calls every operation with generated requests
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "--no-color",
            "run",
            str(COMMITTED_DOCUMENT),
            "--checks",
            ",".join(CHECKS),
            "--phases",
            ",".join(PHASES),
            "--suppress-health-check",
            "all",
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            # A serializer for the suppression import's application/x-ndjson body.
            "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        },
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    # THEN no answer is a 5xx, and each has a documented status, media type and body
    assert done.returncode == 0, (
        f"schemathesis found failures (exit {done.returncode}):\n{done.stdout[-30000:]}"
        f"\n{done.stderr[-5000:]}\n--- runner output ---\n{runner.output()[-5000:]}"
    )


def test_the_runner_serves_the_committed_document_naming_its_own_address(runner: Runner) -> None:
    # GIVEN the local runner on its own port
    # WHEN /openapi.json is fetched from it
    answer = http("GET", f"{runner.api_url}/openapi.json")
    # THEN its server is the runner's real address, and otherwise it is the committed document
    assert answer.status == 200
    served = answer.json()
    assert served.pop("servers") == [
        {"url": runner.api_url, "description": "where this document was served from"}
    ]
    committed = json.loads(COMMITTED_DOCUMENT.read_text(encoding="utf-8"))
    committed.pop("servers")
    assert served == committed
