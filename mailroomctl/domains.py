"""``mailroomctl domains``: sending domains, their DNS checks and DKIM keys (issue 16)."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from mailroomctl.client import AdminClient


def register_domains(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    domains = commands.add_parser("domains", help="sending domains: DNS records, checks, DKIM")
    actions = domains.add_subparsers(dest="domains_command", required=True)

    add = actions.add_parser("add", help="register a domain for a client; prints its DNS records")
    add.add_argument("client", help="the client's id or name")
    add.add_argument("domain", help="the domain, e.g. example.com")
    add.set_defaults(handler=_add)

    listing = actions.add_parser("list", help="a client's domains")
    listing.add_argument("client", help="the client's id or name")
    listing.set_defaults(handler=_list)

    for action, what, method in (
        ("show", "one domain: its records and what the last check found", "GET"),
        ("verify", "look its DNS records up now", "POST"),
        ("rotate-dkim", "a new DKIM key under a new selector", "POST"),
        ("retire-dkim", "stop publishing keys a rotation replaced", "POST"),
        ("remove", "delete the domain and its keys", "DELETE"),
    ):
        command = actions.add_parser(action, help=what)
        command.add_argument("domain_id", help="the domain's id (from `domains list`)")
        command.set_defaults(handler=_by_id, method=method, action=action)


def _add(client: AdminClient, args: argparse.Namespace) -> Any:
    path = f"/admin/clients/{quote(args.client, safe='')}/domains"
    return client.request("POST", path, {"domain": args.domain})


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", f"/admin/clients/{quote(args.client, safe='')}/domains")


def _by_id(client: AdminClient, args: argparse.Namespace) -> Any:
    path = f"/admin/domains/{quote(args.domain_id, safe='')}"
    if args.action not in ("show", "remove"):
        path += f"/{args.action}"
    return client.request(args.method, path)
