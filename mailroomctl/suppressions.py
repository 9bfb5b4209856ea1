"""``mailroomctl suppressions``: list, add, remove, import and export the suppression list."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

from mailroomctl.client import AdminClient

REASONS = ("hard_bounce", "complaint", "unsubscribe", "manual")
EXPORT_FIELDS = (
    "address",
    "scope",
    "client_id",
    "reason",
    "source",
    "note",
    "created_at",
    "updated_at",
    "expires_at",
)
# The admin API's largest page: export walks every entry in pages of this.
EXPORT_PAGE = 1000


def register_suppressions(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser(
        "suppressions", help="addresses Mailroom will not send to (bounces, complaints, ...)"
    )
    actions = group.add_subparsers(dest="suppressions_command", required=True)

    listing = actions.add_parser("list", help="one page of entries, oldest first")
    _filters(listing)
    listing.add_argument("--limit", type=int, default=100, help="at most this many (1-1000)")
    listing.add_argument("--cursor", help="the next_cursor of the previous page")
    listing.set_defaults(handler=_list)

    add = actions.add_parser("add", help="suppress an address for every client, or for one")
    add.add_argument("address")
    add.add_argument("--client-id", help="only this client's mail (default: every client)")
    add.add_argument("--reason", choices=REASONS, default="manual")
    add.add_argument("--expires-at", help="ISO 8601 time with offset, e.g. 2027-01-01T00:00:00Z")
    add.add_argument("--note", help="why, for the next operator")
    add.set_defaults(handler=_add)

    remove = actions.add_parser("remove", help="lift the global entry, or one client's")
    remove.add_argument("address")
    remove.add_argument("--client-id", help="the client whose entry to remove")
    remove.set_defaults(handler=_remove)

    importing = actions.add_parser(
        "import",
        help="add or replace entries from a CSV or JSON-lines file (an export imports as is)",
    )
    importing.add_argument("file", type=Path)
    importing.add_argument("--client-id", help="into this client's list (default: the global one)")
    importing.add_argument(
        "--format", choices=("csv", "jsonl"), help="default: from the file name (.jsonl, .ndjson)"
    )
    importing.add_argument(
        "--atomic", action="store_true", help="import nothing if any line is bad"
    )
    importing.set_defaults(handler=_import)

    export = actions.add_parser("export", help="every entry, as CSV or JSON lines")
    _filters(export)
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    export.set_defaults(handler=_export)


def _filters(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--client-id", help="only this client's entries")
    scope.add_argument("--global", dest="global_only", action="store_true", help="only global")
    parser.add_argument("--address")
    parser.add_argument("--reason", choices=REASONS)
    parser.add_argument("--include-expired", action="store_true")


def _query(args: argparse.Namespace, **extra: Any) -> str:
    params = {
        "client_id": args.client_id,
        "scope": "global" if args.global_only else None,
        "address": args.address,
        "reason": args.reason,
        "include_expired": "true" if args.include_expired else None,
        **extra,
    }
    return urlencode({k: v for k, v in params.items() if v is not None})


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    query = _query(args, limit=args.limit, cursor=args.cursor)
    return client.request("GET", f"/admin/suppressions?{query}")


def _add(client: AdminClient, args: argparse.Namespace) -> Any:
    body = {
        "address": args.address,
        "client_id": args.client_id,
        "reason": args.reason,
        "expires_at": args.expires_at,
        "note": args.note,
    }
    return client.request(
        "POST", "/admin/suppressions", {k: v for k, v in body.items() if v is not None}
    )


def _remove(client: AdminClient, args: argparse.Namespace) -> Any:
    query = urlencode(
        {k: v for k, v in {"address": args.address, "client_id": args.client_id}.items() if v}
    )
    return client.request("DELETE", f"/admin/suppressions?{query}")


MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


def _import(client: AdminClient, args: argparse.Namespace) -> Any:
    form = args.format or ("jsonl" if args.file.suffix in (".jsonl", ".ndjson") else "csv")
    params = {"client_id": args.client_id, "atomic": "true" if args.atomic else None}
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return client.request(
        "POST",
        f"/admin/suppressions/import{'?' + query if query else ''}",
        raw=args.file.read_bytes(),
        content_type=MEDIA_TYPES[form],
    )


def _export(client: AdminClient, args: argparse.Namespace) -> None:
    entries = _every_entry(client, args)
    if args.output is None:
        count = _write(entries, sys.stdout, args.format)
    else:
        with args.output.open("w", encoding="utf-8", newline="") as out:
            count = _write(entries, out, args.format)
    print(f"mailroomctl: exported {count} entries", file=sys.stderr)


def _every_entry(client: AdminClient, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        extra = {"limit": EXPORT_PAGE, **({"cursor": cursor} if cursor else {})}
        page = client.request("GET", f"/admin/suppressions?{_query(args, **extra)}")
        yield from page["suppressions"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _write(entries: Iterator[dict[str, Any]], out: TextIO, form: str) -> int:
    count = 0
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
    if form == "csv":
        writer.writeheader()
    for entry in entries:
        if form == "csv":
            writer.writerow({k: "" if entry.get(k) is None else entry[k] for k in EXPORT_FIELDS})
        else:
            out.write(json.dumps(entry, sort_keys=True) + "\n")
        count += 1
    return count
