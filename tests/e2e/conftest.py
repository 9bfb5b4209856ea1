"""Fixtures for the e2e tests: one local runner for the whole run (see harness.py)."""

import pytest

from tests.e2e.harness import database_url, runner

__all__ = ["database_url", "runner"]

FUZZ_MODULE = "test_openapi_fuzz.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The fuzz run leaves the shared runner's data in a random state (clients,
    # templates, suppressions): it goes last, so no other test sees that.
    items.sort(key=lambda item: item.path.name == FUZZ_MODULE)
