"""``mailroomctl dlq``: list, redrive and purge the dead-letter queue through the admin API."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from mailroomctl.client import AdminClient


def register_dlq(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = commands.add_parser("dlq", help="the send queue's dead-letter queue")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)

    listing = actions.add_parser("list", help="messages in the DLQ, with their last error")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1-100)")
    _band_option(listing)
    listing.set_defaults(handler=_list)

    redrive = actions.add_parser(
        "redrive", help="send one message (or --all) back to the send queue after a fix"
    )
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument("message_id", nargs="?", help="the message's id (from `dlq list`)")
    which.add_argument("--all", action="store_true", help="every message in the DLQ")
    _band_option(redrive)
    redrive.set_defaults(handler=_redrive)

    purge = actions.add_parser("purge", help="delete everything in the DLQ, for good")
    purge.add_argument(
        "--confirm",
        metavar="QUEUE_NAME",
        help="the DLQ's name, to confirm without being asked (for scripts)",
    )
    _band_option(purge)
    purge.set_defaults(handler=_purge)


def _band_option(parser: argparse.ArgumentParser) -> None:
    # Issue 20: each priority band's send queue has its own DLQ.
    parser.add_argument(
        "--band",
        choices=("high", "normal", "low"),
        default="normal",
        help="which priority band's DLQ (normal: where exhausted messages go; `dlq list` "
        "shows every band's size)",
    )


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", f"/admin/dlq?limit={args.limit}&band={args.band}")


def _redrive(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.all:
        return client.request("POST", f"/admin/dlq/redrive?band={args.band}")
    return client.request(
        "POST", f"/admin/dlq/{quote(args.message_id, safe='')}/redrive?band={args.band}"
    )


def _purge(client: AdminClient, args: argparse.Namespace) -> Any:
    confirm = args.confirm
    if confirm is None:
        listing = client.request("GET", f"/admin/dlq?limit=1&band={args.band}")
        queue, total = listing["queue"], listing["approximate_total"]
        if not sys.stdin.isatty():
            raise SystemExit(f"mailroomctl: not a terminal; pass --confirm {queue} to purge")
        print(f"This deletes about {total} message(s) from {queue} for good.", file=sys.stderr)
        confirm = input(f"Type the queue's name ({queue}) to confirm: ").strip()
    return client.request("POST", f"/admin/dlq/purge?band={args.band}", {"confirm": confirm})
