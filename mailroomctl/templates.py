"""``mailroomctl templates``: upload, list and preview templates through the admin API."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mailroomctl.client import AdminClient


def register_templates(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    templates = commands.add_parser("templates", help="email templates")
    actions = templates.add_subparsers(dest="templates_command", required=True)

    listing = actions.add_parser("list", help="every template and its versions")
    listing.add_argument("--client-id", help="only the templates this client owns")
    listing.set_defaults(handler=_list)

    upload = actions.add_parser(
        "upload",
        help="upload a template folder as a new version",
        description=(
            "FOLDER holds `subject`, `html` and optionally `text`, `schema.json`, "
            '`sample.json` and `meta.json` (`{"bulk": true}`): the layout of templates/<name>/.'
        ),
    )
    upload.add_argument("folder", type=Path)
    upload.add_argument("--name", help="the template's name (default: the folder's name)")
    upload.add_argument(
        "--client-id", help="upload as this client's own template (default: shared, every client's)"
    )
    upload.set_defaults(handler=_upload)

    preview = actions.add_parser("preview", help="render with sample (or given) props, with lint")
    preview.add_argument("name")
    preview.add_argument("--version", type=int, help="an uploaded version (default: newest)")
    preview.add_argument("--props", type=Path, help="a JSON file of props (default: the sample)")
    preview.add_argument("--html-out", type=Path, help="write the HTML here instead of printing it")
    preview.add_argument("--client-id", help="render what this client's sends would")
    preview.set_defaults(handler=_preview)


def _list(client: AdminClient, args: argparse.Namespace) -> Any:
    return client.request("GET", "/admin/templates" + _for_client(args))


def _upload(client: AdminClient, args: argparse.Namespace) -> Any:
    folder: Path = args.folder
    if not (folder / "html").is_file():
        raise SystemExit(f"mailroomctl: {folder} has no `html` file")
    body: dict[str, Any] = {
        "name": args.name or folder.resolve().name,
        "subject": (_read(folder / "subject", required=True) or "").strip(),
        "html": _read(folder / "html", required=True),
    }
    for part, field in (("text", "text"), ("schema.json", "schema"), ("sample.json", "sample")):
        raw = _read(folder / part, required=False)
        if raw is not None:
            body[field] = json.loads(raw) if part.endswith(".json") else raw
    meta = _read(folder / "meta.json", required=False)
    if meta is not None:
        # What a file template's meta.json says travels with its upload.
        for key in ("bulk", "tracking"):
            if key in json.loads(meta):
                body[key] = json.loads(meta)[key]
    return client.request("POST", "/admin/templates" + _for_client(args), body)


def _preview(client: AdminClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {}
    if args.version is not None:
        body["version"] = args.version
    if args.props is not None:
        body["props"] = json.loads(args.props.read_text(encoding="utf-8"))
    path = f"/admin/templates/{quote(args.name, safe='')}/preview" + _for_client(args)
    result = client.request("POST", path, body)
    if args.html_out is not None:
        args.html_out.write_text(result.pop("html"), encoding="utf-8")
        result["html_written_to"] = str(args.html_out)
    return result


def _for_client(args: argparse.Namespace) -> str:
    """The ``client_id`` query of a client's templates (issue 15); none for shared ones."""
    return f"?client_id={quote(args.client_id, safe='')}" if args.client_id else ""


def _read(path: Path, *, required: bool) -> str | None:
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if required:
        raise SystemExit(f"mailroomctl: {path} is missing")
    return None
