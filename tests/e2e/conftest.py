"""Fixtures for the e2e tests: one local runner for the whole run (see harness.py)."""

from tests.e2e.harness import database_url, runner

__all__ = ["database_url", "runner"]
