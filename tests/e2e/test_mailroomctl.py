"""mailroomctl against the local runner's admin API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import Runner, mailroomctl

pytestmark = pytest.mark.e2e


def test_whoami_accepts_the_runners_admin_token(runner: Runner) -> None:
    # GIVEN the admin token the runner wrote to its credentials file
    # WHEN mailroomctl checks it
    result = mailroomctl(runner, "whoami")
    # THEN the admin API accepts it
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"role": "admin"}


def test_a_wrong_admin_token_is_refused_with_the_error_code(runner: Runner) -> None:
    result = mailroomctl(runner, "whoami", token="not-the-token")
    assert result.returncode == 1
    assert "401 unauthorized" in result.stderr


def test_health_goes_through_the_admin_function(runner: Runner) -> None:
    result = mailroomctl(runner, "health")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["checks"] == {"postgres": "ok", "redis": "ok"}
    # the backlog, as GET /health reports it
    assert set(answer["backlog"]) == {
        "dead_letter_depth",
        "oldest_queued_age_seconds",
        "oldest_overdue_scheduled_seconds",
    }


def test_the_venvs_mailroomctl_command_runs_from_any_folder(runner: Runner, tmp_path: Path) -> None:
    # GIVEN the command `make` installs beside the venv's python (pyproject's console script)
    command = Path(sys.executable).parent / "mailroomctl"
    assert command.is_file(), "run `make` (pip install -e .) to install the mailroomctl command"
    # WHEN an operator runs it from a folder outside the checkout, with no PYTHONPATH
    unset = {"PYTHONPATH", "MAILROOM_API_URL", "MAILROOM_ADMIN_TOKEN", "MAILROOM_CREDENTIALS"}
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    result = subprocess.run(
        [str(command), "--credentials", str(runner.local_dir / "dev-credentials.json"), "whoami"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    # THEN it reaches the runner's admin API with the runner's credentials
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"role": "admin"}


def test_reputation_and_metrics_through_the_admin_api(runner: Runner) -> None:
    # GIVEN the runner's demo client (issue 21)
    client = runner.credentials["api_key"]
    # WHEN an operator reads its reputation, lifts it, and reads the metrics
    shown = mailroomctl(runner, "reputation", "show", client)
    lifted = mailroomctl(runner, "reputation", "lift", client)
    metrics = mailroomctl(runner, "metrics")
    listed = mailroomctl(runner, "reputation", "list")
    # THEN each answers through the admin API
    for result in (shown, lifted, metrics, listed):
        assert result.returncode == 0, result.stderr
    assert json.loads(shown.stdout)["state"] in {"ok", "warn", "throttle", "pause"}
    assert json.loads(lifted.stdout)["state"] == "ok"
    assert set(json.loads(metrics.stdout)["windows"]) == {
        "last_hour",
        "last_24h",
        "last_7d",
        "last_30d",
    }
    assert "policy" in json.loads(listed.stdout)
