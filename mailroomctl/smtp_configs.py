"""``mailroomctl smtp-configs``: clients' SMTP relays (issue 20)."""

from __future__ import annotations

import argparse
from typing import Any

from mailroomctl.client import AdminClient


def register_smtp_configs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    relays = commands.add_parser("smtp-configs", help="clients' SMTP relays")
    actions = relays.add_subparsers(dest="smtp_configs_command", required=True)
    reseal = actions.add_parser(
        "reseal",
        help="seal every relay password again under SECRETS_ENCRYPTION_KEYS' first key "
        "(after listing a new key first; then the old key can go)",
    )
    reseal.set_defaults(handler=_reseal)


def _reseal(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("POST", "/admin/smtp-configs/reseal")
