"""Canonical Lambda events from events/<function>/<scenario>.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPO_ROOT / "events"


def load_event(name: str) -> dict[str, Any]:
    """``load_event("send/send-welcome")`` → a fresh copy of that event."""
    return copy.deepcopy(json.loads((EVENTS_DIR / f"{name}.json").read_text()))


def with_headers(event: dict[str, Any], **headers: str | None) -> dict[str, Any]:
    """Set (or, with None, remove) headers in both header maps of an API event."""
    for raw_name, value in headers.items():
        name = raw_name.replace("_", "-")
        for key in [k for k in event["headers"] if k.lower() == name.lower()]:
            del event["headers"][key]
            event.get("multiValueHeaders", {}).pop(key, None)
        if value is not None:
            event["headers"][name] = value
            event.setdefault("multiValueHeaders", {})[name] = [value]
    return event


def with_body(event: dict[str, Any], body: Any) -> dict[str, Any]:
    event["body"] = body if isinstance(body, str) else json.dumps(body)
    event["isBase64Encoded"] = False
    return event


def request_event(
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    **headers: str | None,
) -> dict[str, Any]:
    """An API Gateway proxy event for ``method path`` (the health event reshaped)."""
    event = load_event("status/health")
    event["httpMethod"] = method
    event["path"] = event["resource"] = path
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    with_headers(event, **headers)
    if body is not None:
        with_body(event, body)
    return event


class FakeLambdaContext(LambdaContext):
    """What Lambda passes as ``context``, with fixed values."""

    def __init__(self, function_name: str = "mailroom-test") -> None:
        self._function_name = function_name
        self._function_version = "$LATEST"
        self._invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self._memory_limit_in_mb = 256
        self._aws_request_id = "00000000-0000-4000-8000-000000000000"
        self._log_group_name = f"/aws/lambda/{function_name}"
        self._log_stream_name = "2026/11/23/[$LATEST]test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000
