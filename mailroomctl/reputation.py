"""``mailroomctl reputation`` and ``metrics``: sender reputation and sending metrics (issue 21).

A client is named by its id or its API key (``mr_live_…``).
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from mailroomctl.client import AdminClient


def register_reputation(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reputation = commands.add_parser(
        "reputation", help="clients' bounce and complaint rates, throttles and pauses"
    )
    actions = reputation.add_subparsers(dest="reputation_command", required=True)

    listing = actions.add_parser("list", help="every judged client, paused and throttled first")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="one client's state, rates and what comes next")
    show.add_argument("client", help="id or API key")
    show.set_defaults(handler=_show)

    lift = actions.add_parser(
        "lift", help="lift a pause (or throttle): sends are accepted again, the window restarts"
    )
    lift.add_argument("client", help="id or API key")
    lift.set_defaults(handler=_lift)

    metrics = commands.add_parser(
        "metrics", help="sending totals and rates over the last hour, 24 h, 7 and 30 days"
    )
    metrics.set_defaults(handler=_metrics)


def _path(client: str, action: str = "") -> str:
    return f"/admin/clients/{quote(client, safe='')}/reputation{action}"


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", "/admin/reputation")


def _show(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", _path(args.client))


def _lift(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("POST", _path(args.client, "/lift"))


def _metrics(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", "/admin/metrics")
