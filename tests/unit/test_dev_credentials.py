"""The local runner's credentials file across the inbound_smtp field's arrival (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

from devstack.demo_client import DevCredentials, bounce_signing_keys
from mailroom.domain.return_path import SigningKeyring

OLD = {"api_url": "http://x", "api_key": "k", "api_secret": "s", "admin_token": "t"}


def test_a_file_written_before_inbound_smtp_still_names_the_same_client(tmp_path: Path) -> None:
    path = tmp_path / "dev-credentials.json"
    path.write_text(json.dumps(OLD))
    read = DevCredentials.read(path)
    assert read == DevCredentials(**OLD, inbound_smtp="")


def test_inbound_smtp_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "dev-credentials.json"
    DevCredentials(**OLD, inbound_smtp="127.0.0.1:2526").write(path)
    assert json.loads(path.read_text())["inbound_smtp"] == "127.0.0.1:2526"
    read = DevCredentials.read(path)
    assert read is not None
    assert read.inbound_smtp == "127.0.0.1:2526"


def test_bounce_keys_are_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "bounce-signing-keys"
    first = bounce_signing_keys(path)
    assert SigningKeyring.from_setting(first).current == "k1"
    assert bounce_signing_keys(path) == first
    assert path.stat().st_mode & 0o077 == 0
