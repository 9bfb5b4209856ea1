"""``mailroomctl dlq`` against the local runner: its admin function reaches the runner's DLQ."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.e2e.harness import Runner, mailroomctl

pytestmark = pytest.mark.e2e


def test_dlq_list_reads_the_runners_dead_letter_queue(runner: Runner) -> None:
    # GIVEN the runner, which created the template's DLQ and told the functions its URL
    # WHEN an operator lists it
    result = mailroomctl(runner, "dlq", "list")
    # THEN the admin function answers with the queue it read
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["queue"] == "mailroom-local-send-dlq"
    assert isinstance(listing["messages"], list)


def test_redriving_a_message_that_is_not_there_is_404(runner: Runner) -> None:
    result = mailroomctl(runner, "dlq", "redrive", str(uuid.uuid4()))
    assert result.returncode == 1
    assert "404 dead_letter_not_found" in result.stderr


def test_purge_without_a_terminal_or_the_right_name_deletes_nothing(runner: Runner) -> None:
    # No terminal to ask on: refused before anything is sent
    unasked = mailroomctl(runner, "dlq", "purge")
    assert unasked.returncode != 0
    assert "--confirm mailroom-local-send-dlq" in unasked.stderr
    # The wrong name: the API refuses it
    wrong = mailroomctl(runner, "dlq", "purge", "--confirm", "yes")
    assert wrong.returncode == 1
    assert "422 confirmation_required" in wrong.stderr
