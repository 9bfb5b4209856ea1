"""Issue 21: open and click tracking through the worker and the tracking function.

Real PostgreSQL, Redis, moto's SQS and an SMTP sink: a tracked message is
sent, its links and pixel are read back from the mail the sink received, and
the tracking function's handler answers them.
"""

from __future__ import annotations

import base64
import json
import uuid
from email import message_from_bytes
from email.message import Message as EmailMessage
from typing import Any

import pytest
import redis
from sqlalchemy import select, text, update

from mailroom.adapters.db.tables import MessageEventRow, MessageRow, TrackingHitRow
from mailroom.adapters.db.unit_of_work import Database
from mailroom.bootstrap import bootstrap
from mailroom.config import Settings
from mailroom.entrypoints.tracking import PIXEL, create_tracking_api, handle
from mailroom.services import tracking_ingest
from mailroom.services.tracking_ingest import DrainReport
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.integration.conftest import SmtpSink, free_port
from tests.integration.test_bounces import Stack

pytestmark = pytest.mark.integration

PERSON = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)"
HTML = (
    "<html><body><p>Hello {{ name }} &amp; welcome.</p>"
    '<a href="https://shop.example/a?x=1&amp;y=2">Shop</a> '
    '<a href="mailto:help@shop.example">Mail us</a> '
    '<a data-mr-notrack href="https://shop.example/private">Private</a>'
    "</body></html>"
)


@pytest.fixture
def stack(database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink) -> Stack:
    return Stack(
        database,
        redis_url,
        queue_url,
        smtp_sink,
        tracking_base_url="https://t.acme.example",
        tracking_machine_seconds=0,
        tracking_hits_per_token_minute=5,
    )


def send_tracked(stack: Stack, **tracking: bool) -> tuple[uuid.UUID, EmailMessage]:
    """An inline message (HTML above) sent with ``tracking``, through the worker."""
    event = load_event("send/send-welcome")
    with_headers(event, X_Api_Key=stack.client.api_key, X_Api_Secret=stack.client.api_secret)
    body: dict[str, Any] = {
        "to": "ada@example.com",
        "subject": "Hello",
        "html": HTML,
        "text": "Shop at https://shop.example/a?x=1&y=2",
        "props": {"name": "Ada"},
    }
    if tracking is not None:
        body["tracking"] = tracking or {"opens": True, "clicks": True}
    with_body(event, body)
    response = stack.api.resolve(event, FakeLambdaContext())
    assert response["statusCode"] == 202, response["body"]
    stack.run_worker_once()
    return uuid.UUID(json.loads(response["body"])["id"]), message_from_bytes(
        stack.sink.received[-1].data
    )


def html_of(mail: EmailMessage) -> str:
    for part in mail.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no HTML part")


def text_of(mail: EmailMessage) -> str:
    for part in mail.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text part")


def tokens_in(html: str, prefix: str) -> list[str]:
    found = []
    marker = f"https://t.acme.example/{prefix}/"
    for chunk in html.split(marker)[1:]:
        found.append(chunk.split('"')[0].removesuffix(".gif"))
    return found


def request(path: str, user_agent: str = PERSON, ip: str = "203.0.113.7") -> dict[str, Any]:
    event = load_event("status/get-message")
    event["httpMethod"] = "GET"
    event["path"] = path
    segments = path.strip("/").split("/")
    if segments[0] == "t":
        event["resource"] = "/t/{file}"
        event["pathParameters"] = {"file": segments[1]}
    else:
        event["resource"] = "/c/{token}"
        event["pathParameters"] = {"token": segments[1]}
    event["headers"] = {"User-Agent": user_agent} if user_agent else {}
    event["multiValueHeaders"] = {"User-Agent": [user_agent]} if user_agent else {}
    event["requestContext"]["identity"]["sourceIp"] = ip
    event["body"] = None
    return event


def answer(stack: Stack, path: str, **visitor: str) -> dict[str, Any]:
    """The tracking function's answer; the hit, if any, waits in the stream."""
    app = create_tracking_api(lambda: stack.services)
    return handle(app, request(path, **visitor), FakeLambdaContext("mailroom-tracking"))


def drain(stack: Stack, consumer: str = "test") -> DrainReport:
    """What the tracking consumer does when woken: the queued hits, written."""
    services = stack.services
    assert services.tracking_store is not None
    assert services.hit_queue is not None
    return tracking_ingest.drain(
        services.tracking_store, services.hit_queue, services.tracking_config, consumer=consumer
    )


def call(stack: Stack, path: str, **visitor: str) -> dict[str, Any]:
    """One request, then the consumer's drain: a hit recorded as it would be at once."""
    response = answer(stack, path, **visitor)
    drain(stack)
    return response


def headers_of(answer: dict[str, Any]) -> dict[str, str]:
    """Single and multi-value headers of a proxy answer, by lower-case name."""
    merged = {str(k).lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        merged[str(name).lower()] = ", ".join(str(v) for v in values)
    return merged


def assert_pixel(answer: dict[str, Any]) -> None:
    assert answer["statusCode"] == 200
    assert answer["isBase64Encoded"] is True
    assert base64.b64decode(answer["body"]) == PIXEL
    headers = headers_of(answer)
    assert headers["content-type"] == "image/gif"
    assert "no-store" in headers["cache-control"]


def events_of(stack: Stack, message_id: uuid.UUID, kind: str) -> list[dict[str, Any]]:
    with stack.database.engine.connect() as connection:
        rows = connection.execute(
            select(MessageEventRow.detail)
            .where(MessageEventRow.message_id == message_id, MessageEventRow.type == kind)
            .order_by(MessageEventRow.id)
        ).scalars()
        return [dict(row) for row in rows]


def hits(stack: Stack) -> int:
    return stack.count(TrackingHitRow)


def test_a_tracked_message_carries_redirects_and_a_pixel_but_its_text_part_is_untouched(
    stack: Stack,
) -> None:
    # GIVEN a message sent with tracking on
    _, mail = send_tracked(stack)
    html = html_of(mail)
    # THEN its one http(s) link and the hidden honeypot point at the tracking host
    assert len(tokens_in(html, "c")) == 2
    # AND mailto: and marked links are as they were (the marker gone)
    assert 'href="mailto:help@shop.example"' in html
    assert 'href="https://shop.example/private"' in html
    assert "data-mr-notrack" not in html
    # AND there is exactly one pixel
    assert len(tokens_in(html, "t")) == 1
    # AND the text part names the real link
    assert "https://shop.example/a?x=1&y=2" in text_of(mail)
    assert "t.acme.example" not in text_of(mail)


def test_untracked_mail_is_left_alone(stack: Stack) -> None:
    # GIVEN the default (off) for a transactional message
    _, mail = send_tracked(stack, opens=False, clicks=False)
    # THEN nothing points at the tracking host
    assert "t.acme.example" not in html_of(mail)
    stack.send("ada@example.com")
    assert "t.acme.example" not in html_of(message_from_bytes(stack.sink.received[-1].data))


def test_the_pixel_records_an_open_and_the_link_redirects_to_the_stored_url(
    stack: Stack,
) -> None:
    message_id, mail = send_tracked(stack)
    html = html_of(mail)
    (pixel,) = tokens_in(html, "t")
    first_link = tokens_in(html, "c")[0]
    # WHEN a person opens the message and clicks its first link
    assert_pixel(call(stack, f"/t/{pixel}.gif"))
    answer = call(stack, f"/c/{first_link}")
    # THEN a 302 to the URL stored for that token, not cacheable
    assert answer["statusCode"] == 302
    with stack.database.engine.connect() as connection:
        stored = connection.execute(
            text("SELECT url FROM tracking_links WHERE token = :t"), {"t": first_link}
        ).scalar_one()
    assert headers_of(answer)["location"] == stored
    assert stored == "https://shop.example/a?x=1&y=2"
    assert "no-store" in headers_of(answer)["cache-control"]
    # AND an opened and a clicked event, both human
    (opened,) = events_of(stack, message_id, "opened")
    (clicked,) = events_of(stack, message_id, "clicked")
    assert opened["machine"] is False
    assert opened["signals"] == []
    assert opened["first_open"] is True
    assert clicked["machine"] is False
    assert clicked["url"] == stored
    assert clicked["link_index"] == 0


def test_no_open_redirect_whatever_the_token(stack: Stack) -> None:
    # GIVEN a tracked message and one of its real tokens
    message_id, mail = send_tracked(stack)
    html = html_of(mail)
    real = tokens_in(html, "c")[0]
    (pixel,) = tokens_in(html, "t")
    before = hits(stack)
    tampered = [
        real[:-1] + ("A" if real[-1] != "A" else "B"),
        real.upper() if real.upper() != real else real.lower(),
        real + "x",
        real[:-1],
        pixel,  # a pixel token is not a link
        "https:%2F%2Fevil.example",
        "Ly9ldmlsLmV4YW1wbGU",  # base64 of //evil.example
        "x" * 200,
        "..%2F..%2Fadmin",
    ]
    for token in tampered:
        # WHEN the click URL is altered in any way
        answer = call(stack, f"/c/{token}")
        # THEN 404, no Location, nothing recorded
        assert answer["statusCode"] == 404, (token, answer)
        assert "location" not in headers_of(answer)
        assert json.loads(answer["body"])["error"]["code"] == "tracking_link_not_found"
    assert hits(stack) == before
    assert events_of(stack, message_id, "clicked") == []


def test_an_unknown_or_forged_pixel_still_answers_a_gif_and_records_nothing(stack: Stack) -> None:
    send_tracked(stack)
    before = hits(stack)
    for file in ("AAAAAAAAAAAAAAAAAAAAAA.gif", "nope.gif", "x" * 300, "%00.gif"):
        assert_pixel(call(stack, f"/t/{file}"))
    assert hits(stack) == before


def test_a_flood_on_one_token_is_limited_never_a_5xx(stack: Stack) -> None:
    # GIVEN a limit of 5 recorded hits per token per minute
    message_id, mail = send_tracked(stack)
    (pixel,) = tokens_in(mail_html := html_of(mail), "t")
    link = tokens_in(mail_html, "c")[0]
    # WHEN each is hit 12 times
    for _ in range(12):
        assert_pixel(call(stack, f"/t/{pixel}.gif"))
        assert call(stack, f"/c/{link}")["statusCode"] == 302
    # THEN 5 of each are recorded, the rest counted in Redis
    assert len(events_of(stack, message_id, "opened")) == 5
    assert len(events_of(stack, message_id, "clicked")) == 5
    counter = redis.Redis.from_url(stack.settings.redis_url)
    assert int(counter.get(f"mailroom:tracking:over:{pixel}") or 0) == 7


@pytest.mark.parametrize(
    ("user_agent", "ip", "signal"),
    [
        ("Mozilla/5.0", "203.0.113.7", "user_agent"),  # Apple MPP
        ("Mozilla/5.0 (via ggpht.com GoogleImageProxy)", "203.0.113.7", "user_agent"),
        ("", "203.0.113.7", "no_user_agent"),
        (PERSON, "17.58.100.1", "ip_range"),
    ],
)
def test_machine_opens_are_flagged_by_each_signal(
    stack: Stack, user_agent: str, ip: str, signal: str
) -> None:
    message_id, mail = send_tracked(stack)
    (pixel,) = tokens_in(html_of(mail), "t")
    assert_pixel(call(stack, f"/t/{pixel}.gif", user_agent=user_agent, ip=ip))
    (opened,) = events_of(stack, message_id, "opened")
    assert opened["machine"] is True
    assert opened["signals"] == [signal]


def test_an_open_right_after_the_send_is_a_machine(
    database: Database, redis_url: str, queue_url: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN hits within 60 s of the send count as machines
    stack = Stack(
        database,
        redis_url,
        queue_url,
        smtp_sink,
        tracking_base_url="https://t.acme.example",
        tracking_machine_seconds=60,
    )
    message_id, mail = send_tracked(stack)
    (pixel,) = tokens_in(html_of(mail), "t")
    assert_pixel(call(stack, f"/t/{pixel}.gif"))
    # WHEN the same open comes an hour after the send
    with database.engine.begin() as connection:
        connection.execute(
            update(MessageRow)
            .where(MessageRow.id == message_id)
            .values(sent_at=text("now() - interval '1 hour'"))
        )
    assert_pixel(call(stack, f"/t/{pixel}.gif"))
    first, later = events_of(stack, message_id, "opened")
    # THEN the first is a machine, too soon; the later one a person, the first human open
    assert first["signals"] == ["too_soon"]
    assert first["first_open"] is False
    assert later["machine"] is False
    assert later["first_open"] is True
    # AND another human open is not the first
    assert_pixel(call(stack, f"/t/{pixel}.gif"))
    assert events_of(stack, message_id, "opened")[-1]["first_open"] is False


def test_the_honeypot_marks_the_scanners_clicks_before_and_after(stack: Stack) -> None:
    # GIVEN a scanner that follows every link, honeypot included, and a person
    message_id, mail = send_tracked(stack)
    links = tokens_in(html_of(mail), "c")
    real, honeypot = links[0], links[-1]
    scanner = {"user_agent": "Mozilla/5.0 (Windows NT 10.0) Chrome/120", "ip": "198.51.100.4"}
    assert call(stack, f"/c/{real}", **scanner)["statusCode"] == 302
    honey = call(stack, f"/c/{honeypot}", **scanner)
    assert call(stack, f"/c/{real}", **scanner)["statusCode"] == 302
    assert call(stack, f"/c/{real}")["statusCode"] == 302
    # THEN the honeypot answers an empty page, no redirect, no clicked event
    assert honey["statusCode"] == 200
    assert "location" not in headers_of(honey)
    clicked = events_of(stack, message_id, "clicked")
    assert [event["machine"] for event in clicked] == [False, True, False]
    assert clicked[1]["signals"] == ["honeypot"]
    # AND the scanner's earlier click is flagged in the hits: one unique human click
    engagement = stack.services.tracking_store.engagement(message_id)  # type: ignore[union-attr]
    assert engagement.clicks == 3
    assert engagement.machine_clicks == 2
    assert engagement.unique_clicks == 1


def test_the_pixel_answers_a_gif_when_the_database_is_down(
    redis_url: str, queue_url: str, smtp_sink: SmtpSink
) -> None:
    # GIVEN services whose database is a port nothing listens on
    settings = Settings(
        database_url=f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/nothing",
        redis_url=redis_url,
        queue_url=queue_url,
        tracking_base_url="https://t.acme.example",
    )
    services = bootstrap(settings)
    app = create_tracking_api(lambda: services)
    # WHEN a well-formed token's pixel is fetched
    answer = handle(app, request("/t/AAAAAAAAAAAAAAAAAAAAAA.gif"), FakeLambdaContext())
    # THEN the GIF, all the same
    assert_pixel(answer)
    # AND a click, which has nowhere to go, is a 503 (a retry), not a redirect
    click = handle(app, request("/c/AAAAAAAAAAAAAAAAAAAAAA"), FakeLambdaContext())
    assert click["statusCode"] == 503


def test_the_status_api_shows_first_open_unique_opens_and_unique_clicks(stack: Stack) -> None:
    # GIVEN a tracked message opened by Apple's proxy, then twice by a person, and clicked
    message_id, mail = send_tracked(stack)
    html = html_of(mail)
    (pixel,) = tokens_in(html, "t")
    link = tokens_in(html, "c")[0]
    assert_pixel(call(stack, f"/t/{pixel}.gif", user_agent="Mozilla/5.0"))
    assert_pixel(call(stack, f"/t/{pixel}.gif"))
    assert_pixel(call(stack, f"/t/{pixel}.gif"))
    assert call(stack, f"/c/{link}")["statusCode"] == 302
    # WHEN the client reads the message
    event = load_event("status/get-message")
    with_headers(event, X_Api_Key=stack.client.api_key, X_Api_Secret=stack.client.api_secret)
    event["path"] = f"/v1/messages/{message_id}"
    event["pathParameters"] = {"message_id": str(message_id)}
    answer = stack.api.resolve(event, FakeLambdaContext())
    assert answer["statusCode"] == 200, answer["body"]
    engagement = json.loads(answer["body"])["engagement"]
    # THEN machine opens are apart, one unique human open, one unique click
    assert engagement["opens"] == 3
    assert engagement["machine_opens"] == 1
    assert engagement["unique_opens"] == 1
    assert engagement["first_open_at"] is not None
    assert engagement["clicks"] == 1
    assert engagement["unique_clicks"] == 1
    # AND an untracked message has none
    plain = stack.send("ada@example.com")
    event["path"] = f"/v1/messages/{plain}"
    event["pathParameters"] = {"message_id": str(plain)}
    answer = stack.api.resolve(event, FakeLambdaContext())
    assert json.loads(answer["body"])["engagement"] is None
