"""Where the template code signing key comes from, and what happens without one."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from devstack.demo_client import template_code_signing_key
from mailroom.bootstrap import bootstrap
from mailroom.config import Settings
from tests.fakes import FakeUnitOfWork


def _renderer_shares(settings: Settings) -> bool:
    services = bootstrap(settings, uow=FakeUnitOfWork, health_probes={})
    return services.renderer.store._shared is not None


def test_without_a_key_compiled_code_is_not_shared() -> None:
    # GIVEN no TEMPLATE_CODE_SIGNING_KEY / WHEN the renderer is built
    # THEN it never reads code from Redis (it could not tell whose it is)
    assert not _renderer_shares(Settings(template_code_signing_key=None))


def test_with_a_key_compiled_code_is_shared() -> None:
    assert _renderer_shares(Settings(template_code_signing_key=SecretStr("k" * 43)))


def test_a_short_key_is_refused_at_cold_start() -> None:
    with pytest.raises(ValidationError, match="template_code_signing_key"):
        Settings(template_code_signing_key=SecretStr("short"))


def test_the_local_runner_keeps_one_key_in_local_dir(tmp_path: Path) -> None:
    # GIVEN no key file yet / WHEN the runner starts twice
    path = tmp_path / ".local" / "template-code-signing-key"
    first = template_code_signing_key(path)
    second = template_code_signing_key(path)
    # THEN one key was generated, kept private, and reused
    assert first == second
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # AND a damaged file is replaced with a new key
    path.write_text("short")
    assert len(template_code_signing_key(path)) >= 32
