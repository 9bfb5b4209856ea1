"""Issue 21 through the local runner: a tracked send, its pixel and link over HTTP, the events."""

from __future__ import annotations

import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

import pytest

from tests.e2e.harness import DELIVERY_TIMEOUT_SECONDS, Runner, http
from tests.e2e.test_local_runner import delivered_email

pytestmark = pytest.mark.e2e

PERSON = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0"
TARGET = "https://shop.example/a?x=1&y=2"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # The redirect is what is under test; following it would leave 127.0.0.1.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers={"User-Agent": PERSON, "Accept": "image/*,*/*"})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _html(delivered: EmailMessage) -> str:
    part = delivered.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def test_a_tracked_send_its_pixel_and_link_and_the_events(runner: Runner) -> None:
    # GIVEN a message sent with tracking on through the runner's API
    answer = http(
        "POST",
        f"{runner.api_url}/v1/send",
        headers=runner.auth_headers(),
        body={
            "to": "track-e2e@example.com",
            "subject": "Tracked",
            "html": f'<html><body><a href="{TARGET.replace("&", "&amp;")}">Shop</a></body></html>',
            "tracking": {"opens": True, "clicks": True},
        },
    )
    assert answer.status == 202, answer.body
    message_id = str(answer.json()["id"])
    html = _html(delivered_email(runner, message_id))
    base = runner.api_url.rstrip("/")
    pixel = html.split(f"{base}/t/")[1].split('"')[0]
    link = html.split(f"{base}/c/")[1].split('"')[0]
    # WHEN the pixel is fetched
    status, headers, body = _get(f"{base}/t/{pixel}")
    # THEN a GIF, not cacheable
    assert status == 200
    assert headers["Content-Type"] == "image/gif"
    assert "no-store" in headers["Cache-Control"]
    assert body.startswith(b"GIF89a")
    # WHEN the link is followed
    status, headers, _ = _get(f"{base}/c/{link}")
    # THEN a 302 to the original URL
    assert status == 302
    assert headers["Location"] == TARGET
    # AND an unknown token is 404, its pixel still a GIF
    assert _get(f"{base}/c/{'A' * 22}")[0] == 404
    assert _get(f"{base}/t/{'A' * 22}.gif")[2].startswith(b"GIF89a")
    # AND the message's events and engagement say so
    url = f"{runner.api_url}/v1/messages/{message_id}"

    def seen() -> dict[str, Any] | None:
        view: dict[str, Any] = http("GET", url, headers=runner.auth_headers()).json()
        types = {event["type"] for event in view["events"]}
        return view if {"opened", "clicked"} <= types else None

    view = runner.wait_for("opened and clicked events", seen, DELIVERY_TIMEOUT_SECONDS)
    opened = next(e for e in view["events"] if e["type"] == "opened")
    clicked = next(e for e in view["events"] if e["type"] == "clicked")
    # Fetched right after delivery: only "too soon" may flag them, not the agent.
    assert set(opened["detail"]["signals"]) <= {"too_soon"}
    assert clicked["detail"]["url"] == TARGET
    assert view["engagement"]["opens"] == 1
    assert view["engagement"]["clicks"] == 1
