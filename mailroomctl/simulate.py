"""``mailroomctl simulate KIND MESSAGE_ID``: a provider's event for a message, signed and posted.

For the local stack only: it signs with the keys `make dev` generated
(.local/webhook-keys, mailroomctl/local_webhooks.py), which a deployed stack
does not trust. The message is read through the client API (the demo
client's credentials) for its recipient and provider id.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mailroomctl.client import AdminApiError, AdminClient
from mailroomctl.local_webhooks import KINDS, PROVIDERS, LocalWebhookKeys, simulated_request

KEYS_FOLDER = Path(__file__).resolve().parent.parent / ".local" / "webhook-keys"


def register_simulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="post a provider's signed delivery event for a message (local stack only)",
    )
    simulate.add_argument("kind", choices=KINDS)
    simulate.add_argument("message_id", help="the id POST /v1/send answered")
    simulate.add_argument("--provider", choices=PROVIDERS, default="ses")
    simulate.add_argument(
        "--keys",
        type=Path,
        default=Path(os.environ.get("MAILROOM_WEBHOOK_KEYS", KEYS_FOLDER)),
        help="the local runner's webhook keys (default .local/webhook-keys)",
    )
    simulate.set_defaults(handler=_simulate)


def _simulate(client: AdminClient, args: argparse.Namespace) -> Any:
    if not (args.keys / "mailgun-signing-key").is_file():
        raise AdminApiError(0, "no_local_keys", f"no webhook keys in {args.keys}: run make dev", [])
    saved = json.loads(args.credentials.read_text()) if args.credentials.is_file() else {}
    api_key = os.environ.get("MAILROOM_API_KEY") or saved.get("api_key")
    api_secret = os.environ.get("MAILROOM_API_SECRET") or saved.get("api_secret")
    if not api_key or not api_secret:
        raise AdminApiError(0, "no_client_key", "no client key: set MAILROOM_API_KEY/SECRET", [])
    message = _call(
        client.api_url,
        "GET",
        f"/v1/messages/{quote(args.message_id, safe='')}",
        {"X-Api-Key": api_key, "X-Api-Secret": api_secret},
        None,
    )
    signed = simulated_request(
        LocalWebhookKeys.load_or_create(args.keys),
        args.provider,
        args.kind,
        message_id=str(message["id"]),
        recipient=str((message.get("to") or ["nobody@example.com"])[0]),
        provider_msg_id=message.get("provider_msg_id"),
    )
    answer = _call(client.api_url, "POST", signed.path, signed.headers, signed.body)
    return {"posted": signed.path, "provider": args.provider, "event": args.kind, "answer": answer}


def _call(api_url: str, method: str, path: str, headers: dict[str, str], body: bytes | None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the local stack's own API
        api_url.rstrip("/") + path,
        data=body,
        method=method,
        headers={"Accept": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            detail = json.loads(text)["error"]
            raise AdminApiError(error.code, detail["code"], detail["message"], []) from None
        except (ValueError, KeyError, TypeError):
            raise AdminApiError(error.code, "http_error", text[:200].decode(), []) from None
    except urllib.error.URLError as error:
        raise AdminApiError(0, "unreachable", f"{api_url}: {error.reason}", []) from None
    return json.loads(raw) if raw else None
