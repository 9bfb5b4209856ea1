"""``mailroomctl clients``, ``quota`` and ``audit``: API clients through the admin API.

A client is named by its id or its API key (``mr_live_…``) wherever one is asked for.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote, urlencode

from mailroomctl.client import AdminClient


def register_clients(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clients = commands.add_parser("clients", help="API clients, their keys and limits")
    actions = clients.add_subparsers(dest="clients_command", required=True)

    create = actions.add_parser("create", help="a new client; prints its secret, once")
    create.add_argument("name")
    _limits(create)
    create.set_defaults(handler=_create)

    listing = actions.add_parser("list", help="every client")
    listing.add_argument("--status", choices=["active", "suspended"])
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="one client, with this month's quota usage")
    show.add_argument("client", help="id or API key")
    show.set_defaults(handler=_show)

    update = actions.add_parser(
        "update", help="change the name, limits, provider order or sandbox mode"
    )
    update.add_argument("client", help="id or API key")
    update.add_argument("--name")
    _limits(update)
    update.add_argument("--no-daily-limit", action="store_true", help="remove the daily limit")
    update.add_argument(
        "--default-provider-order",
        action="store_true",
        help="forget the client's own order and use the service-wide one",
    )
    update.set_defaults(handler=_update)

    for action, what in (
        ("suspend", "refuse the client's requests (403) on every instance at once"),
        ("reactivate", "let a suspended client in again"),
    ):
        command = actions.add_parser(action, help=what)
        command.add_argument("client", help="id or API key")
        command.set_defaults(handler=_state_change, action=action)

    rotate = actions.add_parser("rotate-secret", help="a new secret; prints it, once")
    rotate.add_argument("client", help="id or API key")
    rotate.add_argument(
        "--grace-seconds",
        type=int,
        help="how long the old secret keeps working (default: the service's setting; 0: none)",
    )
    rotate.set_defaults(handler=_rotate)

    quota = commands.add_parser("quota", help="monthly quota counters")
    quota_actions = quota.add_subparsers(dest="quota_command", required=True)
    reconcile = quota_actions.add_parser(
        "reconcile", help="set quota counters to what the messages table says"
    )
    reconcile.add_argument("client", nargs="?", help="id or API key; every client if absent")
    reconcile.add_argument("--period", help="YYYY-MM; the current month if absent")
    reconcile.set_defaults(handler=_reconcile)

    audit = commands.add_parser(
        "audit", help="the admin audit log, in the order the actions happened (oldest first)"
    )
    audit.add_argument(
        "--target", help="only entries about this target (client id, address, template, ...)"
    )
    audit.add_argument("--limit", type=int, default=50, help="the last N entries (default 50)")
    audit.add_argument("--after", type=int, help="the first N entries after this seq instead")
    audit.set_defaults(handler=_audit)


def _limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate-limit", type=int, help="requests per minute")
    parser.add_argument("--quota-limit", type=int, help="messages per calendar month (UTC)")
    parser.add_argument("--daily-limit", type=int, help="messages per UTC day")
    parser.add_argument(
        "--provider-order", help="comma-separated provider names, e.g. ses,smtp", default=None
    )
    parser.add_argument(
        "--sandbox-mode",
        choices=["on", "off"],
        help="on: every key of the client acts in test mode (nothing reaches a provider)",
    )


def _path(client: str, action: str = "") -> str:
    return f"/admin/clients/{quote(client, safe='')}{action}"


def _order(raw: str) -> list[str]:
    return [name.strip() for name in raw.split(",") if name.strip()]


def _create(client: AdminClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"name": args.name}
    if args.rate_limit is not None:
        body["rate_limit"] = args.rate_limit
    if args.quota_limit is not None:
        body["quota_limit"] = args.quota_limit
    if args.daily_limit is not None:
        body["daily_limit"] = args.daily_limit
    if args.provider_order is not None:
        body["provider_order"] = _order(args.provider_order)
    if args.sandbox_mode is not None:
        body["sandbox_mode"] = args.sandbox_mode == "on"
    created = client.request("POST", "/admin/clients", body)
    print("the secret is shown only this once: store it now", file=sys.stderr)
    return created


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    query = f"?{urlencode({'status': args.status})}" if args.status else ""
    return client.request("GET", f"/admin/clients{query}")


def _show(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", _path(args.client))


def _update(client: AdminClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name
    if args.rate_limit is not None:
        body["rate_limit"] = args.rate_limit
    if args.quota_limit is not None:
        body["quota_limit"] = args.quota_limit
    if args.daily_limit is not None:
        body["daily_limit"] = args.daily_limit
    if args.no_daily_limit:
        body["daily_limit"] = None
    if args.provider_order is not None and args.default_provider_order:
        raise SystemExit("mailroomctl: --provider-order or --default-provider-order, not both")
    if args.provider_order is not None:
        body["provider_order"] = _order(args.provider_order)
    if args.default_provider_order:
        body["provider_order"] = None
    if args.sandbox_mode is not None:
        body["sandbox_mode"] = args.sandbox_mode == "on"
    if not body:
        raise SystemExit("mailroomctl: nothing to change; see `mailroomctl clients update -h`")
    return client.request("PATCH", _path(args.client), body)


def _state_change(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("POST", _path(args.client, f"/{args.action}"))


def _rotate(client: AdminClient, args: argparse.Namespace) -> Any:
    body = {} if args.grace_seconds is None else {"grace_seconds": args.grace_seconds}
    rotated = client.request("POST", _path(args.client, "/rotate-secret"), body)
    print("the new secret is shown only this once: store it now", file=sys.stderr)
    return rotated


def _reconcile(client: AdminClient, args: argparse.Namespace) -> Any:
    body = {
        key: value
        for key, value in (("client", args.client), ("period", args.period))
        if value is not None
    }
    return client.request("POST", "/admin/quota/reconcile", body)


def _audit(client: AdminClient, args: argparse.Namespace) -> Any:
    query: dict[str, Any] = {"limit": args.limit}
    if args.target:
        query["target"] = args.target
    if args.after is not None:
        query["after"] = args.after
    return client.request("GET", f"/admin/audit?{urlencode(query)}")
