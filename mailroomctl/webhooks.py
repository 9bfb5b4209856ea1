"""``mailroomctl webhooks``: a client's outbound webhook endpoints through the admin API.

The client is named by its id or any of its key ids (``mr_live_…``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from mailroomctl.client import AdminClient


def register_webhooks(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    webhooks = commands.add_parser("webhooks", help="a client's outbound webhook endpoints")
    actions = webhooks.add_subparsers(dest="webhooks_command", required=True)

    create = actions.add_parser("create", help="a new endpoint; prints its secret, once")
    create.add_argument("client", help="client id or any of its key ids")
    create.add_argument("url", help="https://… (a public host)")
    create.add_argument(
        "--event", action="append", dest="events", help="repeatable event type; none: all"
    )
    create.add_argument("--description")
    create.set_defaults(handler=_create)

    listing = actions.add_parser("list", help="the client's endpoints (never a secret)")
    listing.add_argument("client", help="client id or any of its key ids")
    listing.set_defaults(handler=_list)

    for name, enabled, text in (
        ("disable", False, "stop deliveries to an endpoint"),
        ("enable", True, "resume deliveries to a disabled endpoint"),
    ):
        switch = actions.add_parser(name, help=text)
        switch.add_argument("client", help="client id or any of its key ids")
        switch.add_argument("webhook", help="the endpoint's id")
        switch.set_defaults(handler=_switch, enabled=enabled)

    rotate = actions.add_parser("rotate-secret", help="a new signing secret; prints it, once")
    rotate.add_argument("client", help="client id or any of its key ids")
    rotate.add_argument("webhook", help="the endpoint's id")
    rotate.add_argument(
        "--grace-seconds", type=int, help="how long the old secret signs too (default 24 h)"
    )
    rotate.set_defaults(handler=_rotate)

    delete = actions.add_parser("delete", help="delete an endpoint and its pending deliveries")
    delete.add_argument("client", help="client id or any of its key ids")
    delete.add_argument("webhook", help="the endpoint's id")
    delete.set_defaults(handler=_delete)

    deliveries = actions.add_parser("deliveries", help="an endpoint's attempts, newest first")
    deliveries.add_argument("client", help="client id or any of its key ids")
    deliveries.add_argument("webhook", help="the endpoint's id")
    deliveries.add_argument("--limit", type=int, default=50)
    deliveries.set_defaults(handler=_deliveries)

    test = actions.add_parser("test", help="send a webhook.test event to an endpoint")
    test.add_argument("client", help="client id or any of its key ids")
    test.add_argument("webhook", help="the endpoint's id")
    test.set_defaults(handler=_test)

    retry = actions.add_parser("retry", help="send a delivery's event again now (same webhook-id)")
    retry.add_argument("client", help="client id or any of its key ids")
    retry.add_argument("webhook", help="the endpoint's id")
    retry.add_argument("delivery", type=int, help="a delivery id from `deliveries`")
    retry.set_defaults(handler=_retry)

    replay = actions.add_parser(
        "replay", help="send every event of a time range to an endpoint again"
    )
    replay.add_argument("client", help="client id or any of its key ids")
    replay.add_argument("webhook", help="the endpoint's id")
    replay.add_argument(
        "--start", required=True, help="RFC 3339 with an offset: events at or after"
    )
    replay.add_argument("--end", required=True, help="RFC 3339 with an offset: events before")
    replay.set_defaults(handler=_replay)


def _path(client: str, tail: str = "") -> str:
    return f"/admin/clients/{quote(client, safe='')}/webhooks{tail}"


def _create(client: AdminClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"url": args.url}
    if args.events:
        body["events"] = args.events
    if args.description is not None:
        body["description"] = args.description
    created = client.request("POST", _path(args.client), body)
    print("the signing secret is shown only this once: store it now", file=sys.stderr)
    return created


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", _path(args.client))


def _switch(client: AdminClient, args: argparse.Namespace) -> Any:
    tail = f"/{quote(args.webhook, safe='')}"
    return client.request("PATCH", _path(args.client, tail), {"enabled": args.enabled})


def _rotate(client: AdminClient, args: argparse.Namespace) -> Any:
    body = {} if args.grace_seconds is None else {"grace_seconds": args.grace_seconds}
    tail = f"/{quote(args.webhook, safe='')}/rotate-secret"
    rotated = client.request("POST", _path(args.client, tail), body)
    print("the new signing secret is shown only this once: store it now", file=sys.stderr)
    return rotated


def _delete(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("DELETE", _path(args.client, f"/{quote(args.webhook, safe='')}"))


def _deliveries(client: AdminClient, args: argparse.Namespace) -> Any:
    tail = f"/{quote(args.webhook, safe='')}/deliveries?limit={int(args.limit)}"
    return client.request("GET", _path(args.client, tail))


def _test(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("POST", _path(args.client, f"/{quote(args.webhook, safe='')}/test"))


def _retry(client: AdminClient, args: argparse.Namespace) -> Any:
    tail = f"/{quote(args.webhook, safe='')}/deliveries/{int(args.delivery)}/retry"
    return client.request("POST", _path(args.client, tail))


def _replay(client: AdminClient, args: argparse.Namespace) -> Any:
    tail = f"/{quote(args.webhook, safe='')}/replay"
    return client.request("POST", _path(args.client, tail), {"start": args.start, "end": args.end})
