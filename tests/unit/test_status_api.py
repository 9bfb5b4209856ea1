"""The status API's delivery views: recipients, events, listings; each for its owner only."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType, RejectReason
from mailroom.domain.model import MessageStatus
from mailroom.entrypoints.openapi_document import committed_form
from mailroom.services.clients import RegisteredClient, register_client
from mailroom.services.feedback import record_delivery_events
from mailroom.services.status import decode_cursor, encode_cursor
from tests.events import load_event, with_headers
from tests.fakes import PlainHasher
from tests.unit.test_api import Api, _welcome


def _get(
    api: Api, path: str, client: RegisteredClient | None = None, **query: Any
) -> tuple[int, Any]:
    event = load_event("status/get-message")
    event["path"] = path
    params = {k: str(v) for k, v in query.items() if v is not None}
    event["queryStringParameters"] = params or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in params.items()} or None
    client = client or api.client
    with_headers(event, X_Api_Key=client.api_key, X_Api_Secret=client.api_secret)
    status, body, _ = api.call(event)
    return status, body


def _send(api: Api, **overrides: Any) -> str:
    status, body, _ = api.call(api.send_event(_welcome(**overrides)))
    assert status == 202, body
    return str(body["id"])


def _mark_sent(api: Api, message_id: str, provider_msg_id: str) -> None:
    with api.uow:
        message = api.uow.messages.get(uuid.UUID(message_id))
        assert message is not None
        message.status, message.provider, message.provider_msg_id = (
            MessageStatus.SENT,
            "ses",
            provider_msg_id,
        )
        api.uow.messages.save_outcome(message)
        api.uow.commit()


def _report(api: Api, provider_msg_id: str, event_type: FeedbackEventType, recipient: str) -> None:
    record_delivery_events(
        api.uow,
        [
            DeliveryEvent(
                provider="ses",
                event_type=event_type,
                event_id=uuid.uuid4().hex,
                timestamp=datetime(2026, 11, 23, tzinfo=UTC),
                message_id=provider_msg_id,
                recipient=recipient,
                reject_reason=RejectReason.BOUNCED
                if event_type is FeedbackEventType.BOUNCED
                else None,
                mta_response="smtp; 550 5.1.1 user unknown"
                if event_type is FeedbackEventType.BOUNCED
                else "250 OK",
            )
        ],
    )


def test_the_message_shows_each_recipients_outcome() -> None:
    # GIVEN a message to two recipients and a cc, sent, one delivered and one bounced
    api = Api()
    message_id = _send(api, to=["ada@example.com", "Bob <bob@example.com>"], cc="cy@example.com")
    _mark_sent(api, message_id, "ses-1")
    _report(api, "ses-1", FeedbackEventType.DELIVERED, "ada@example.com")
    _report(api, "ses-1", FeedbackEventType.BOUNCED, "bob@example.com")
    # WHEN its owner reads it
    status, body = _get(api, f"/v1/messages/{message_id}")
    # THEN the final status and every recipient's own outcome
    assert status == 200
    assert body["status"] == "bounced"
    recipients = {r["address"]: r for r in body["recipients"]}
    assert {a: (r["kind"], r["status"]) for a, r in recipients.items()} == {
        "ada@example.com": ("to", "delivered"),
        "bob@example.com": ("to", "bounced"),
        "cy@example.com": ("cc", "sent"),  # nothing reported: reads as the message was sent
    }
    assert recipients["bob@example.com"]["reject_reason"] == "bounced"
    assert recipients["bob@example.com"]["response"] == "smtp; 550 5.1.1 user unknown"


def test_the_events_route_lists_the_history_oldest_first() -> None:
    api = Api()
    message_id = _send(api)
    _mark_sent(api, message_id, "ses-2")
    _report(api, "ses-2", FeedbackEventType.DELIVERED, "ada@example.com")
    status, body = _get(api, f"/v1/messages/{message_id}/events")
    assert status == 200
    assert body["message_id"] == message_id
    assert [e["type"] for e in body["events"]] == ["accepted", "delivered"]
    assert body["events"][1]["detail"]["provider"] == "ses"


def test_listing_pages_newest_first_without_gaps_or_repeats() -> None:
    api = Api()
    sent = [_send(api, to=f"user{n}@example.com") for n in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        status, page = _get(api, "/v1/messages", limit=3, cursor=cursor)
        assert status == 200
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(sent))


def test_listing_filters_by_status_recipient_and_time() -> None:
    api = Api()
    first = _send(api, to="ada@example.com")
    second = _send(api, to="bob@example.com", cc="Ada <ADA@example.com>")
    third = _send(api, to="cy@example.com")
    _mark_sent(api, third, "ses-3")
    assert [m["id"] for m in _get(api, "/v1/messages", status="sent")[1]["messages"]] == [third]
    by_recipient = _get(api, "/v1/messages", recipient="ada@example.com")[1]["messages"]
    assert [m["id"] for m in by_recipient] == [second, first]
    created = api.uow.messages.rows[uuid.UUID(second)].created_at
    assert created is not None
    window = _get(
        api,
        "/v1/messages",
        since=created.isoformat(),
        until=(created + timedelta(microseconds=1)).isoformat(),
    )[1]["messages"]
    assert [m["id"] for m in window] == [second]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"status": "lost"}, "query.status"),
        ({"limit": 0}, "query.limit"),
        ({"since": "yesterday"}, "query.since"),
    ],
)
def test_bad_listing_parameters_are_422(query: dict[str, Any], field: str) -> None:
    status, body = _get(Api(), "/v1/messages", **query)
    assert (status, body["error"]["code"]) == (422, "validation_error")
    assert field in {d.get("field") for d in body["error"]["details"]}


class TestTenantIsolation:
    def test_client_b_sees_none_of_client_as_messages(self) -> None:
        # GIVEN client A's message with provider events, and client B
        api = Api()
        message_id = _send(api)
        _mark_sent(api, message_id, "ses-4")
        _report(api, "ses-4", FeedbackEventType.DELIVERED, "ada@example.com")
        other = register_client(api.uow, PlainHasher(), name="other")
        # THEN B gets 404 for the message and its events, and an empty listing
        for path in (f"/v1/messages/{message_id}", f"/v1/messages/{message_id}/events"):
            status, body = _get(api, path, other)
            assert (status, body["error"]["code"]) == (404, "message_not_found")
        status, listing = _get(api, "/v1/messages", other)
        assert (status, listing) == (200, {"messages": [], "next_cursor": None})
        status, filtered = _get(api, "/v1/messages", other, recipient="ada@example.com")
        assert filtered["messages"] == []
        # while A sees all of it
        assert _get(api, f"/v1/messages/{message_id}/events")[0] == 200
        assert len(_get(api, "/v1/messages")[1]["messages"]) == 1

    def test_a_cursor_from_client_a_shows_client_b_nothing_of_a(self) -> None:
        api = Api()
        for _ in range(3):
            _send(api)
        cursor = _get(api, "/v1/messages", limit=1)[1]["next_cursor"]
        other = register_client(api.uow, PlainHasher(), name="other")
        assert _get(api, "/v1/messages", other, cursor=cursor)[1]["messages"] == []

    def test_unauthenticated_listing_is_401(self) -> None:
        api = Api()
        event = load_event("status/get-message")
        event["path"] = "/v1/messages"
        with_headers(event, X_Api_Key=None, X_Api_Secret=None)
        status, body, _ = api.call(event)
        assert (status, body["error"]["code"]) == (401, "unauthorized")


def test_cursor_round_trip() -> None:
    at = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
    message_id = uuid.uuid4()
    assert decode_cursor(encode_cursor(at, message_id)) == (at, message_id)


def test_the_api_document_lists_the_feedback_routes() -> None:
    document = json.loads(committed_form())
    assert {
        "/v1/messages",
        "/v1/messages/{message_id}/events",
        "/webhooks/{provider}",
        "/admin/suppressions",
    } <= set(document["paths"])
    # providers authenticate by signature: the webhook route has no security
    # requirement, and none applies API-wide
    assert "security" not in document["paths"]["/webhooks/{provider}"]["post"]
    assert "security" not in document
