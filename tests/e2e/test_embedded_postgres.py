"""`make dev` on a machine with no PostgreSQL answering: an embedded one (issue 22)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import SAMPLE_PROPS, http, kill, start_runner
from tests.run_services import free_port

pytestmark = pytest.mark.e2e


def test_the_runner_starts_an_embedded_postgres_when_none_answers(tmp_path: Path) -> None:
    # GIVEN a DATABASE_URL where nothing listens
    nowhere = f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/mailroom"
    # WHEN the runner starts
    runner = start_runner(tmp_path / "local", nowhere, tmp_path / "runner.log")
    try:
        # THEN it says it started one, and the API works on it (a send is stored)
        assert "started an embedded PostgreSQL" in runner.output()
        answer = http(
            "POST",
            f"{runner.api_url}/v1/send",
            headers=runner.auth_headers(),
            body={"template": "welcome", "to": "ada@example.com", "props": SAMPLE_PROPS},
        )
        assert answer.status == 202, answer.body
        assert (tmp_path / "local" / "postgres" / "PG_VERSION").is_file()
        assert runner.stop() == 0
    finally:
        kill(runner)
