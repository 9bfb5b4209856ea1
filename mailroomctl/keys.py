"""``mailroomctl keys``: a client's API keys through the admin API.

The client is named by its id or any of its key ids (``mr_live_…``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from mailroomctl.client import AdminClient

SCOPES = (
    "email:send, email:read, queue:manage, smtp:manage, analytics:read, "
    "suppression:manage, webhook:manage, template:manage, admin (all)"
)


def register_keys(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="a client's API keys: scopes, modes, allowlists")
    actions = keys.add_subparsers(dest="keys_command", required=True)

    create = actions.add_parser("create", help="a new key; prints its secret and token, once")
    create.add_argument("client", help="client id or any of its key ids")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope", action="append", required=True, dest="scopes", help=f"repeatable: {SCOPES}"
    )
    create.add_argument("--mode", choices=["live", "test"], default="live")
    create.add_argument("--expires-at", help="ISO 8601 with a time zone, e.g. 2027-01-01T00:00Z")
    create.add_argument(
        "--allow-ip", action="append", default=[], dest="ip_allowlist", help="repeatable CIDR"
    )
    create.add_argument("--rate-limit", type=int, help="requests per minute for this key")
    create.set_defaults(handler=_create)

    listing = actions.add_parser("list", help="the client's keys (never a secret)")
    listing.add_argument("client", help="client id or any of its key ids")
    listing.set_defaults(handler=_list)

    revoke = actions.add_parser("revoke", help="refuse the key on every instance from now on")
    revoke.add_argument("client", help="client id or any of its key ids")
    revoke.add_argument("key", help="the key id to revoke")
    revoke.set_defaults(handler=_revoke)

    rotate = actions.add_parser("rotate", help="a new secret for a key; prints it, once")
    rotate.add_argument("client", help="client id or any of its key ids")
    rotate.add_argument("key", help="the key id to rotate")
    rotate.add_argument(
        "--grace-seconds",
        type=int,
        help="how long the old secret keeps working (default: the service's setting; 0: none)",
    )
    rotate.set_defaults(handler=_rotate)


def _path(client: str, tail: str = "") -> str:
    return f"/admin/clients/{quote(client, safe='')}/api-keys{tail}"


def _create(client: AdminClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {
        "name": args.name,
        "scopes": args.scopes,
        "mode": args.mode,
        "ip_allowlist": args.ip_allowlist,
    }
    if args.expires_at is not None:
        body["expires_at"] = args.expires_at
    if args.rate_limit is not None:
        body["rate_limit"] = args.rate_limit
    created = client.request("POST", _path(args.client), body)
    print("the secret and token are shown only this once: store them now", file=sys.stderr)
    return created


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", _path(args.client))


def _revoke(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("DELETE", _path(args.client, f"/{quote(args.key, safe='')}"))


def _rotate(client: AdminClient, args: argparse.Namespace) -> Any:
    body = {} if args.grace_seconds is None else {"grace_seconds": args.grace_seconds}
    rotated = client.request(
        "POST", _path(args.client, f"/{quote(args.key, safe='')}/rotate"), body
    )
    print("the new secret and token are shown only this once: store them now", file=sys.stderr)
    return rotated
