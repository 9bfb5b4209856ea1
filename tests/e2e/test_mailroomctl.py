"""mailroomctl against the local runner's admin API."""

from __future__ import annotations

import json

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
    assert json.loads(result.stdout)["checks"] == {"postgres": "ok", "redis": "ok"}
