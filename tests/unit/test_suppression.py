"""The suppression list in the send path, in the worker, and behind the admin API."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailroom.adapters.providers.base import FailureKind
from mailroom.adapters.templates import TemplateRenderer, TemplateSource
from mailroom.domain.feedback import RecipientStatus, Suppression, SuppressionReason
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api
from mailroom.services import suppression
from mailroom.services.delivery import DeliveryResult, deliver_message
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.fakes import DictTemplateStore, FakeUnitOfWork, ScriptedProvider
from tests.provider_fakes import chain_of
from tests.unit.test_api import Api, _welcome

ADMIN_TOKEN = "suppression-admin-token-0123456789abcdef"


def _suppress(
    uow: FakeUnitOfWork,
    address: str,
    *,
    client_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
    reason: SuppressionReason = SuppressionReason.HARD_BOUNCE,
) -> None:
    with uow:
        uow.suppressions.upsert(
            Suppression(address=address, reason=reason, client_id=client_id, expires_at=expires_at)
        )
        uow.commit()


class TestSendPath:
    def test_every_recipient_suppressed_is_refused_and_recorded(self) -> None:
        # GIVEN a global hard bounce for the only recipient
        api = Api()
        _suppress(api.uow, "ada@example.com")
        # WHEN the client sends to it
        status, body, _ = api.call(api.send_event(_welcome(to="Ada <Ada@Example.com>")))
        # THEN 422 suppressed, nothing queued, and the refusal has a history
        assert (status, body["error"]["code"]) == (422, "suppressed")
        assert api.queue.sent == []
        message_id = uuid.UUID(body["error"]["details"][0]["message_id"])
        assert body["error"]["details"][1] == {
            "address": "ada@example.com",
            "kind": "to",
            "reason": "hard_bounce",
            "scope": "global",
        }
        stored = api.uow.messages.rows[message_id]
        assert stored.status is MessageStatus.FAILED
        assert stored.to == ["Ada <Ada@example.com>"]  # email-validator lowercases the domain
        assert [e.type for e in api.uow.messages.events(message_id)] == [EventType.SUPPRESSED]
        (outcome,) = api.uow.recipients.for_message(message_id)
        assert outcome.status is RecipientStatus.SUPPRESSED
        # AND no quota was charged for it, while an accepted message is
        assert sum(api.quota.counters.values()) == 0
        assert api.call(api.send_event(_welcome(to="bob@example.com")))[0] == 202
        assert sum(api.quota.counters.values()) == 1

    def test_some_suppressed_are_dropped_and_the_rest_is_sent(self) -> None:
        api = Api()
        _suppress(api.uow, "bob@example.com", client_id=api.client.client.id)
        status, body, _ = api.call(
            api.send_event(_welcome(to=["ada@example.com", "bob@example.com"], cc="cy@example.com"))
        )
        assert status == 202
        message_id = uuid.UUID(body["id"])
        stored = api.uow.messages.rows[message_id]
        assert (stored.to, stored.cc) == (["ada@example.com"], ["cy@example.com"])
        assert [m for m, _ in api.queue.sent] == [message_id]
        events = api.uow.messages.events(message_id)
        assert [e.type for e in events] == [EventType.ACCEPTED, EventType.RECIPIENTS_SUPPRESSED]
        assert events[1].detail["recipients"][0]["address"] == "bob@example.com"
        outcomes = {o.address: o.status for o in api.uow.recipients.for_message(message_id)}
        assert outcomes == {
            "ada@example.com": None,
            "bob@example.com": RecipientStatus.SUPPRESSED,
            "cy@example.com": None,
        }

    def test_only_copies_left_is_refused(self) -> None:
        api = Api()
        _suppress(api.uow, "ada@example.com")
        status, body, _ = api.call(
            api.send_event(_welcome(to="ada@example.com", cc="c@example.com"))
        )
        assert (status, body["error"]["code"]) == (422, "suppressed")
        assert api.queue.sent == []

    def test_another_clients_entry_does_not_apply(self) -> None:
        api = Api()
        _suppress(
            api.uow, "ada@example.com", client_id=uuid.uuid4(), reason=SuppressionReason.COMPLAINT
        )
        assert api.call(api.send_event(_welcome(to="ada@example.com")))[0] == 202

    def test_an_expired_entry_does_not_apply(self) -> None:
        api = Api()
        _suppress(api.uow, "ada@example.com", expires_at=datetime.now(UTC) - timedelta(minutes=1))
        assert api.call(api.send_event(_welcome(to="ada@example.com")))[0] == 202


HELLO = TemplateSource(name="hello", subject="Hello", html="<p>Hi {{ name }}</p>")


class TestWorker:
    def _queued(self, uow: FakeUnitOfWork, to: list[str]) -> uuid.UUID:
        message = Message(
            id=uuid.uuid4(),
            client_id=uuid.uuid4(),
            trace_id="t",
            template_name="hello",
            from_address="noreply@example.com",
            to=to,
            props={"name": "Ada"},
        )
        with uow:
            uow.messages.add(message)
            uow.commit()
        return message.id

    def _deliver(
        self, uow: FakeUnitOfWork, provider: ScriptedProvider, message_id: uuid.UUID
    ) -> DeliveryResult:
        return deliver_message(
            uow,
            DictTemplateStore(HELLO),
            TemplateRenderer(),
            chain_of(provider),
            message_id=message_id,
            max_attempts=3,
        ).result

    def test_a_send_to_a_suppressed_address_does_not_reach_the_provider(self) -> None:
        # GIVEN a queued message whose recipient bounced hard after it was accepted
        uow = FakeUnitOfWork()
        message_id = self._queued(uow, ["ada@example.com"])
        _suppress(uow, "ada@example.com")
        provider = ScriptedProvider()
        # WHEN the worker picks it up
        result = self._deliver(uow, provider, message_id)
        # THEN the provider never sees it and the message fails as suppressed
        assert result is DeliveryResult.FAILED
        assert provider.sent == []
        stored = uow.messages.rows[message_id]
        assert stored.status is MessageStatus.FAILED
        assert stored.last_error == suppression.SUPPRESSED_ERROR
        types = [e.type for e in uow.messages.events(message_id)]
        assert types == [EventType.SUPPRESSED, EventType.FAILED]

    def test_the_rest_is_sent_without_the_suppressed_recipient(self) -> None:
        uow = FakeUnitOfWork()
        message_id = self._queued(uow, ["ada@example.com", "bob@example.com"])
        _suppress(uow, "bob@example.com")
        provider = ScriptedProvider()
        assert self._deliver(uow, provider, message_id) is DeliveryResult.SENT
        (email,) = provider.sent
        assert email.envelope_recipients == ["ada@example.com"]
        assert b"bob@example.com" not in email.mime
        outcomes = {o.address: o.status for o in uow.recipients.for_message(message_id)}
        assert outcomes == {"bob@example.com": RecipientStatus.SUPPRESSED}

    def test_a_retry_does_not_announce_the_drop_twice(self) -> None:
        uow = FakeUnitOfWork()
        message_id = self._queued(uow, ["ada@example.com", "bob@example.com"])
        _suppress(uow, "bob@example.com")
        provider = ScriptedProvider(FailureKind.TRANSIENT)
        assert self._deliver(uow, provider, message_id) is DeliveryResult.RETRY
        assert self._deliver(uow, provider, message_id) is DeliveryResult.SENT
        drops = [
            e for e in uow.messages.events(message_id) if e.type is EventType.RECIPIENTS_SUPPRESSED
        ]
        assert len(drops) == 1


class Admin:
    def __init__(self) -> None:
        self.api = Api()
        settings = self.api.services.settings.model_copy(
            update={"admin_token_sha256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}
        )
        self.api.services.settings = settings
        self.app = create_api(
            admin_routes(lambda: self.api.services), max_request_bytes=lambda: 8192
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = ADMIN_TOKEN,
        **query: Any,
    ) -> tuple[int, Any]:
        event = load_event("status/health")
        event["httpMethod"] = method
        event["path"] = event["resource"] = path
        params = {k: str(v) for k, v in query.items() if v is not None}
        event["queryStringParameters"] = params or None
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in params.items()} or None
        with_headers(event, Authorization=f"Bearer {token}" if token else None)
        if body is not None:
            with_headers(event, Content_Type="application/json")
            with_body(event, body)
        response = self.app.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"]) if response["body"] else None


class TestAdminApi:
    def test_add_list_and_remove(self) -> None:
        admin = Admin()
        client_id = str(admin.api.client.client.id)
        status, created = admin.call(
            "POST", "/admin/suppressions", {"address": "Ada <ADA@example.com>", "note": "asked us"}
        )
        assert status == 201
        assert (created["address"], created["scope"], created["reason"]) == (
            "ada@example.com",
            "global",
            "manual",
        )
        status, _ = admin.call(
            "POST",
            "/admin/suppressions",
            {"address": "bob@example.com", "client_id": client_id, "reason": "unsubscribe"},
        )
        assert status == 201
        status, listed = admin.call("GET", "/admin/suppressions")
        assert status == 200
        assert [(s["address"], s["scope"]) for s in listed["suppressions"]] == [
            ("ada@example.com", "global"),
            ("bob@example.com", "client"),
        ]
        status, only_client = admin.call("GET", "/admin/suppressions", client_id=client_id)
        assert [s["address"] for s in only_client["suppressions"]] == ["bob@example.com"]
        status, removed = admin.call("DELETE", "/admin/suppressions", address="ADA@example.com")
        assert (status, removed) == (200, {"removed": 1})
        status, missing = admin.call("DELETE", "/admin/suppressions", address="ada@example.com")
        assert (status, missing["error"]["code"]) == (404, "suppression_not_found")
        # the client-scoped one needs its client named
        status, _ = admin.call("DELETE", "/admin/suppressions", address="bob@example.com")
        assert status == 404
        status, _ = admin.call(
            "DELETE", "/admin/suppressions", address="bob@example.com", client_id=client_id
        )
        assert status == 200

    @pytest.mark.parametrize(
        ("added", "other"),
        [
            ("ada@xn--bcher-kva.example", "ada@bücher.example"),
            ("ada@bücher.example", "ada@xn--bcher-kva.example"),
            ("ADA@BÜCHER.example", "ada@XN--BCHER-KVA.example"),
        ],
    )
    def test_an_idn_domain_is_one_entry_in_punycode_and_in_unicode(
        self, added: str, other: str
    ) -> None:
        # GIVEN an address suppressed with its domain written one way
        admin = Admin()
        status, created = admin.call("POST", "/admin/suppressions", {"address": added})
        assert (status, created["address"]) == (201, "ada@bücher.example")
        # WHEN it is added again written the other way
        status, again = admin.call("POST", "/admin/suppressions", {"address": other})
        # THEN it is the same entry
        assert (status, again["id"]) == (201, created["id"])
        _, everything = admin.call("GET", "/admin/suppressions")
        assert len(everything["suppressions"]) == 1
        # AND the list filter finds it by either spelling
        for spelling in (added, other):
            _, listed = admin.call("GET", "/admin/suppressions", address=spelling)
            assert [e["id"] for e in listed["suppressions"]] == [created["id"]]
        # AND a send to either spelling is screened out
        for spelling in (added, other):
            status, body, _ = admin.api.call(admin.api.send_event(_welcome(to=spelling)))
            assert (status, body["error"]["code"]) == (422, "suppressed")
        assert admin.api.queue.sent == []
        # AND it can be removed with the string it was added with, once
        status, removed = admin.call("DELETE", "/admin/suppressions", address=added)
        assert (status, removed) == (200, {"removed": 1})
        status, missing = admin.call("DELETE", "/admin/suppressions", address=other)
        assert (status, missing["error"]["code"]) == (404, "suppression_not_found")

    def test_pages_walk_every_entry_once(self) -> None:
        admin = Admin()
        for n in range(5):
            admin.call("POST", "/admin/suppressions", {"address": f"user{n}@example.com"})
        seen: list[str] = []
        cursor = None
        while True:
            _, page = admin.call("GET", "/admin/suppressions", limit=2, cursor=cursor)
            seen += [s["address"] for s in page["suppressions"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"user{n}@example.com" for n in range(5)]

    def test_expired_entries_are_listed_only_on_request(self) -> None:
        admin = Admin()
        _suppress(
            admin.api.uow, "old@example.com", expires_at=datetime.now(UTC) - timedelta(days=1)
        )
        assert admin.call("GET", "/admin/suppressions")[1]["suppressions"] == []
        _, listed = admin.call("GET", "/admin/suppressions", include_expired="true")
        assert [s["address"] for s in listed["suppressions"]] == ["old@example.com"]

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            ({"address": "not an address"}, "validation_error"),
            ({"address": "a@example.com", "client_id": str(uuid.uuid4())}, "validation_error"),
            (
                {"address": "a@example.com", "expires_at": "2001-01-01T00:00:00Z"},
                "validation_error",
            ),
            ({"address": "a@example.com", "reason": "because"}, "validation_error"),
        ],
    )
    def test_bad_entries_are_refused(self, body: dict[str, Any], code: str) -> None:
        admin = Admin()
        status, answer = admin.call("POST", "/admin/suppressions", body)
        assert (status, answer["error"]["code"]) == (422, code)
        assert admin.api.uow.suppressions.entries == []

    @pytest.mark.parametrize("token", [None, "wrong"])
    def test_only_the_admin_token_gets_in(self, token: str | None) -> None:
        admin = Admin()
        status, answer = admin.call(
            "POST", "/admin/suppressions", {"address": "a@example.com"}, token=token
        )
        assert (status, answer["error"]["code"]) == (401, "unauthorized")
        assert admin.call("GET", "/admin/suppressions", token=token)[0] == 401
        assert admin.api.uow.suppressions.entries == []

    def test_a_bad_cursor_is_422(self) -> None:
        status, answer = Admin().call("GET", "/admin/suppressions", cursor="abc")
        assert (status, answer["error"]["code"]) == (422, "validation_error")
