"""Argument parsing and dispatch; each command group lives in its own module."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailroomctl.client import AdminApiError, AdminClient
from mailroomctl.clients import register_clients
from mailroomctl.dlq import register_dlq
from mailroomctl.domains import register_domains
from mailroomctl.keys import register_keys
from mailroomctl.reputation import register_reputation
from mailroomctl.simulate import register_simulate
from mailroomctl.smtp_configs import register_smtp_configs
from mailroomctl.suppressions import register_suppressions
from mailroomctl.templates import register_templates
from mailroomctl.webhooks import register_webhooks

CREDENTIALS_FILE = Path(__file__).resolve().parent.parent / ".local" / "dev-credentials.json"

Handler = Callable[[AdminClient, argparse.Namespace], Any]


def _health(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", "/admin/health")


def _whoami(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", "/admin/whoami")


def register_core(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = commands.add_parser("health", help="whether the admin function's dependencies answer")
    health.set_defaults(handler=_health)
    whoami = commands.add_parser("whoami", help="check the admin token")
    whoami.set_defaults(handler=_whoami)


# Command groups added by later capabilities register themselves here.
COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    register_core,
    register_dlq,
    register_clients,
    register_suppressions,
    register_templates,
    register_keys,
    register_simulate,
    register_domains,
    register_webhooks,
    register_smtp_configs,
    register_reputation,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailroomctl",
        description=(
            "Operate a Mailroom stack through its admin API. The API URL and token come "
            "from --api-url/--admin-token, MAILROOM_API_URL/MAILROOM_ADMIN_TOKEN, or the "
            "local runner's .local/dev-credentials.json."
        ),
    )
    parser.add_argument("--api-url", default=os.environ.get("MAILROOM_API_URL"))
    parser.add_argument("--admin-token", default=os.environ.get("MAILROOM_ADMIN_TOKEN"))
    parser.add_argument(
        "--credentials",
        type=Path,
        default=Path(os.environ.get("MAILROOM_CREDENTIALS", CREDENTIALS_FILE)),
        help="credentials file written by the local runner",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for register in COMMAND_GROUPS:
        register(commands)
    return parser


def _client(args: argparse.Namespace) -> AdminClient:
    api_url, token = args.api_url, args.admin_token
    if (not api_url or not token) and args.credentials.is_file():
        saved = json.loads(args.credentials.read_text())
        api_url = api_url or saved.get("api_url")
        token = token or saved.get("admin_token")
    if not api_url or not token:
        raise SystemExit(
            "mailroomctl: no API URL or admin token; pass --api-url and --admin-token "
            "(or run `make dev`, which writes .local/dev-credentials.json)"
        )
    return AdminClient(api_url=api_url, admin_token=token)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        result = handler(_client(args), args)
    except AdminApiError as error:
        print(f"mailroomctl: {error}", file=sys.stderr)
        for detail in error.details:
            print(f"  {json.dumps(detail)}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0
