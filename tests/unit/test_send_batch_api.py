"""Issue 17 on fakes: inline content on /v1/send, POST /v1/send/batch, and message retry."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from mailroom.adapters.templates import FileTemplateStore, TemplateRenderer
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.feedback import Suppression, SuppressionReason
from mailroom.domain.model import EventType, MessageStatus
from mailroom.entrypoints.api import create_api, send_routes, status_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.services.clients import RegisteredClient, register_client
from tests.events import FakeLambdaContext, request_event, with_headers
from tests.fakes import (
    FakeCredentialVersions,
    FakeQuotaCounter,
    FakeRateLimiter,
    FakeUnitOfWork,
    InMemoryInlineContentStore,
    PlainHasher,
    RecordingQueue,
    ScriptedProvider,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
LIMIT = 256 * 1024


class Api:
    def __init__(self, *, rate_limit: int = 600, quota_limit: int = 100_000) -> None:
        self.uow = FakeUnitOfWork()
        self.queue = RecordingQueue()
        self.contents = InMemoryInlineContentStore()
        self.quota = FakeQuotaCounter()
        self.services: Services = bootstrap(
            Settings(templates_dir=TEMPLATES, max_recipients=5),
            uow=lambda: self.uow,
            hasher=PlainHasher(),
            queue=self.queue,
            templates=FileTemplateStore(TEMPLATES),
            # A generous deadline: this file is about batches, not render time,
            # and a loaded CI machine must not turn a valid item into a 422.
            renderer=TemplateRenderer(timeout_seconds=5.0),
            providers={"smtp": ScriptedProvider()},
            rate_limiter=FakeRateLimiter(),
            quota=self.quota,
            credential_versions=FakeCredentialVersions(),
            health_probes={},
            inline_contents=self.contents,
        )
        self.client = self.register("acme", rate_limit=rate_limit, quota_limit=quota_limit)
        self.app = create_api(
            [send_routes(lambda: self.services), status_routes(lambda: self.services)],
            max_request_bytes=lambda: LIMIT,
            client_gate=ClientGate(lambda: self.services),
        )

    def register(
        self, name: str, *, rate_limit: int = 600, quota_limit: int = 100_000
    ) -> RegisteredClient:
        return register_client(
            self.uow, PlainHasher(), name=name, rate_limit=rate_limit, quota_limit=quota_limit
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        client: RegisteredClient | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        who = client or self.client
        event = request_event(
            method,
            path,
            body=body,
            X_Api_Key=who.api_key,
            X_Api_Secret=who.api_secret,
            Content_Type="application/json",
        )
        with_headers(event, **(headers or {}))
        response = self.app.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"] or "null")

    def send(self, body: Any, **headers: str) -> tuple[int, Any]:
        return self.call("POST", "/v1/send", body, headers=headers)

    def batch(self, items: Any, **headers: str) -> tuple[int, Any]:
        return self.call("POST", "/v1/send/batch", items, headers=headers)


def _inline(to: str = "ada@example.com", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "to": to,
        "subject": "Hello {{ first_name|'Customer' }}",
        "html": "<p>{{ user.address.city }}</p>",
        "text": "{{ user.address.city }}",
        "props": {"first_name": "Ada", "user": {"address": {"city": "Oslo"}}},
    }
    body.update(overrides)
    return body


def _welcome(to: str = "ada@example.com", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": "welcome",
        "to": to,
        "props": json.loads((TEMPLATES / "welcome" / "sample.json").read_text()),
    }
    body.update(overrides)
    return body


# --- inline content on /v1/send ----------------------------------------------


def test_inline_content_is_accepted_and_stored_once_by_hash() -> None:
    # GIVEN inline content sent twice
    api = Api()
    first = api.send(_inline())
    second = api.send(_inline(to="bob@example.com"))
    # THEN both are queued, named by the same content, kept once
    assert first[0] == second[0] == 202
    assert first[1]["render_warnings"] == []
    rows = list(api.uow.messages.rows.values())
    assert {row.template_name for row in rows} == set(api.contents.contents)
    assert len(api.contents.contents) == 1
    # The subject is part of the content: the worker renders it.
    assert all(row.subject is None for row in rows)


def test_inline_content_gets_the_template_lint() -> None:
    # GIVEN inline HTML with an image without alt and no text part
    api = Api()
    body = _inline(html='<p>{{ first_name }}</p><img src="https://x.example/a.png">')
    del body["text"]
    # WHEN it is sent THEN the answer carries the template lint's warnings
    status, answer = api.send(body)
    assert status == 202
    codes = [warning.split(":")[0] for warning in answer["lint_warnings"]]
    assert codes == ["no_text_part", "image_without_alt"]
    # A template send carries none.
    assert api.send(_welcome())[1]["lint_warnings"] == []


def test_personalizations_is_another_name_for_props() -> None:
    api = Api()
    body = _inline()
    body["personalizations"] = body.pop("props")
    status, answer = api.send(body)
    assert status == 202, answer
    assert next(iter(api.uow.messages.rows.values())).props["first_name"] == "Ada"


def test_a_missing_prop_is_422_naming_every_one_and_nothing_is_written() -> None:
    # GIVEN inline content printing three props the request lacks
    api = Api()
    body = _inline(html="{{ a }} {{ user.address.city }} {{ items.0.sku }}", props={})
    # WHEN it is sent (strict by default)
    status, answer = api.send(body)
    # THEN 422 missing_prop names each by path; nothing is stored or queued
    assert status == 422
    assert answer["error"]["code"] == "missing_prop"
    # (the subject's first_name has a default; text repeats the city)
    assert [d["field"] for d in answer["error"]["details"]] == [
        "props.a",
        "props.user.address.city",
        "props.items.0.sku",
    ]
    assert api.uow.messages.rows == {}
    assert api.queue.sent == []


def test_not_strict_renders_missing_props_empty_and_lists_them() -> None:
    api = Api()
    status, answer = api.send(_inline(props={}, strict=False))
    assert status == 202, answer
    assert answer["render_warnings"] == ["user.address.city"]
    assert len(api.queue.sent) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**_welcome(), "html": "<p>x</p>"}, "template"),
        ({"to": "ada@example.com", "subject": "s"}, "template"),
        ({"to": "ada@example.com", "html": "<p>x</p>"}, "subject"),
        ({**_inline(), "template_version": 2}, "template_version"),
        ({**_welcome(), "strict": False}, "strict"),
        ({**_inline(), "personalizations": {}}, "body"),
    ],
)
def test_template_and_inline_content_do_not_mix(body: dict[str, Any], field: str) -> None:
    api = Api()
    status, answer = api.send(body)
    assert status == 422
    assert field in {d["field"] for d in answer["error"]["details"]}, answer
    assert api.uow.messages.rows == {}


# --- POST /v1/send/batch -----------------------------------------------------


def test_a_strict_batch_with_invalid_items_names_each_by_index_and_writes_nothing() -> None:
    # GIVEN a batch whose items 1 and 3 are invalid in different ways
    api = Api()
    items = [_welcome(), _welcome(to="broken@"), _inline(), _inline(props={})]
    # WHEN it is sent without a validation header (strict)
    status, answer = api.batch(items)
    # THEN 422 names both by index with their own codes, and nothing is written
    assert status == 422
    assert answer["error"]["code"] == "validation_error"
    assert [(d["index"], d["code"]) for d in answer["error"]["details"]] == [
        (1, "validation_error"),
        (3, "missing_prop"),
    ]
    assert api.uow.messages.rows == {}
    assert api.queue.sent == []


def test_a_permissive_batch_accepts_the_valid_items_and_reports_the_rest() -> None:
    api = Api()
    items = [_welcome(), _welcome(template="nope"), _inline(), {"to": 3}]
    status, answer = api.batch(items, X_Batch_Validation="permissive")
    assert status == 200, answer
    assert [entry["index"] for entry in answer["data"]] == [0, 2]
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [
        (1, "unknown_template"),
        (3, "validation_error"),
    ]
    ids = {uuid.UUID(entry["id"]) for entry in answer["data"]}
    assert set(api.uow.messages.rows) == ids
    assert {message_id for message_id, _ in api.queue.sent} == ids


def test_a_valid_strict_batch_is_accepted_whole() -> None:
    api = Api()
    status, answer = api.batch([_inline(to=f"user{n}@example.com") for n in range(100)])
    assert status == 200
    assert [entry["index"] for entry in answer["data"]] == list(range(100))
    assert answer["errors"] == []
    assert len(api.uow.messages.rows) == 100
    assert len(api.queue.sent) == 100


@pytest.mark.parametrize(
    "body",
    [
        [_welcome() for _ in range(101)],
        [],
        _welcome(),
        "[1, 2",
    ],
)
def test_a_batch_that_is_not_1_to_100_items_is_refused(body: Any) -> None:
    api = Api()
    status, answer = api.batch(body)
    assert 400 <= status < 500
    assert answer["error"]["code"] in {"validation_error", "malformed_json"}
    assert api.uow.messages.rows == {}


def test_an_unknown_validation_mode_is_refused() -> None:
    api = Api()
    status, _ = api.batch([_welcome()], X_Batch_Validation="lenient")
    assert status == 422
    assert api.uow.messages.rows == {}


def test_the_idempotency_key_of_a_call_answers_a_repeat_as_the_first_time() -> None:
    # GIVEN a permissive batch sent with an Idempotency-Key
    api = Api()
    items = [_welcome(), _welcome(to="broken@")]
    first = api.batch(items, X_Batch_Validation="permissive", Idempotency_Key="call-1")
    # WHEN it is repeated, then the key comes with another body
    again = api.batch(items, X_Batch_Validation="permissive", Idempotency_Key="call-1")
    other = api.batch([_welcome()], X_Batch_Validation="permissive", Idempotency_Key="call-1")
    # THEN the repeat answers the same and writes nothing; the other body is refused
    assert first[0] == again[0] == 200
    assert again[1] == first[1]
    assert len(api.uow.messages.rows) == 1
    assert other[0] == 422
    assert other[1]["error"]["code"] == "idempotency_key_reused"


def test_an_items_own_key_accepts_it_once_across_batches() -> None:
    # GIVEN a batch whose first item carries its own key
    api = Api()
    keyed = _welcome(idempotency_key="order-42")
    first = api.batch([keyed, _welcome(to="bob@example.com")])
    # WHEN the client resends it with a new item
    second = api.batch([keyed, _welcome(to="cy@example.com")])
    # THEN the keyed item names the message of the first batch and is not written again
    assert first[0] == second[0] == 200
    assert second[1]["data"][0]["id"] == first[1]["data"][0]["id"]
    assert second[1]["data"][0]["replayed"] is True
    assert len(api.uow.messages.rows) == 3
    # A key reused with another item body is refused for that item alone.
    third = api.batch(
        [_welcome(to="dee@example.com", idempotency_key="order-42")],
        X_Batch_Validation="permissive",
    )
    assert [(e["index"], e["code"]) for e in third[1]["errors"]] == [(0, "idempotency_key_reused")]


def test_quota_applies_per_item() -> None:
    # GIVEN a client with 2 messages left this month
    api = Api(quota_limit=2)
    # WHEN a permissive batch of 3 arrives
    status, answer = api.batch(
        [_welcome(to=f"u{n}@example.com") for n in range(3)], X_Batch_Validation="permissive"
    )
    # THEN two are accepted, the third refused by quota
    assert status == 200
    assert [entry["index"] for entry in answer["data"]] == [0, 1]
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [(2, "quota_exceeded")]
    # AND a strict batch over quota is 429 with nothing written (the charge given back)
    strict = api.batch([_welcome()])
    assert strict[0] == 429
    assert len(api.uow.messages.rows) == 2


def test_suppression_applies_per_item() -> None:
    api = Api()
    with api.uow:
        api.uow.suppressions.upsert(
            Suppression(address="gone@example.com", reason=SuppressionReason.HARD_BOUNCE)
        )
        api.uow.commit()
    items = [_welcome(), _welcome(to="gone@example.com")]
    strict = api.batch(items)
    assert strict[0] == 422
    assert strict[1]["error"]["code"] == "suppressed"
    assert api.uow.messages.rows == {}
    status, answer = api.batch(items, X_Batch_Validation="permissive")
    assert status == 200
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [(1, "suppressed")]
    failed = uuid.UUID(answer["errors"][0]["details"][0]["message_id"])
    assert api.uow.messages.rows[failed].status is MessageStatus.FAILED
    assert [m for m, _ in api.queue.sent] == [uuid.UUID(answer["data"][0]["id"])]


def test_rate_limit_takes_one_token_per_item() -> None:
    # GIVEN a client allowed 5 requests a minute
    api = Api(rate_limit=5)
    # WHEN it sends a batch larger than its bucket, then two of 3
    too_big = api.batch([_welcome(to=f"u{n}@example.com") for n in range(6)])
    first = api.batch([_welcome(to=f"u{n}@example.com") for n in range(3)])
    second = api.batch([_welcome(to=f"v{n}@example.com") for n in range(3)])
    # THEN the first is refused as invalid, the second fits, the third would exceed it
    assert too_big[0] == 422
    assert first[0] == 200
    assert second[0] == 429
    assert second[1]["error"]["code"] == "rate_limited"
    assert len(api.uow.messages.rows) == 3


# --- POST /v1/messages/{id}/retry --------------------------------------------


def test_a_failed_message_is_retried_as_a_new_attempt_on_the_same_message() -> None:
    # GIVEN a message that failed
    api = Api()
    _, answer = api.send(_welcome())
    message_id = uuid.UUID(answer["id"])
    row = api.uow.messages.rows[message_id]
    row.status, row.last_error, row.attempts = MessageStatus.FAILED, "permanent: 550", 1
    # WHEN the client retries it
    status, retried = api.call("POST", f"/v1/messages/{message_id}/retry")
    # THEN it is queued again, on the queue a second time, with a retried event
    assert status == 202, retried
    assert retried["id"] == str(message_id)
    row = api.uow.messages.rows[message_id]
    assert row.status is MessageStatus.QUEUED
    assert row.last_error is None
    assert [m for m, _ in api.queue.sent] == [message_id, message_id]
    events = [e for m, e in api.uow.messages.event_rows if m == message_id]
    assert events[-1].type is EventType.RETRIED
    assert events[-1].detail == {"previous_error": "permanent: 550", "attempts": 1}


def test_retry_is_refused_for_other_states_and_other_clients() -> None:
    api = Api()
    _, answer = api.send(_welcome())
    message_id = answer["id"]
    # A queued message: 409, and it stays as it was.
    status, body = api.call("POST", f"/v1/messages/{message_id}/retry")
    assert status == 409
    assert body["error"]["code"] == "message_not_retryable"
    # Another client's failed message, and no message at all: 404.
    api.uow.messages.rows[uuid.UUID(message_id)].status = MessageStatus.FAILED
    other = api.register("globex")
    assert api.call("POST", f"/v1/messages/{message_id}/retry", client=other)[0] == 404
    assert api.call("POST", f"/v1/messages/{uuid.uuid4()}/retry")[0] == 404
    assert api.call("POST", "/v1/messages/not-an-id/retry")[0] == 404
    assert len(api.queue.sent) == 1


def test_a_template_requests_fingerprint_is_what_it_was_before_inline_content() -> None:
    # GIVEN a template send as the request model dumped it before issue 17
    from mailroom.domain.commands import SendRequest
    from mailroom.services import idempotency
    from mailroom.services.sending import request_fingerprint

    before = {
        "template": "welcome",
        "template_version": None,
        "to": ["ada@example.com"],
        "props": {"first_name": "Ada"},
        "from": None,
        "subject": None,
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "metadata": {},
    }
    request = SendRequest.model_validate(
        {"template": "welcome", "to": "ada@example.com", "props": {"first_name": "Ada"}}
    )
    # THEN its fingerprint is unchanged: keys held across the upgrade still match
    assert request_fingerprint(request) == idempotency.fingerprint(before)


def test_a_batch_charge_counts_within_the_daily_limit_and_gives_back_in_part() -> None:
    # GIVEN a client with a daily limit of 3 and a monthly quota of 5, none used
    from mailroom.domain.errors import DailyLimitExceeded
    from mailroom.domain.tenancy import QuotaPeriod
    from mailroom.services.quotas import BatchQuotaCharge

    api = Api()
    client = api.client.client
    client.daily_limit, client.quota_limit = 3, 5
    charge = BatchQuotaCharge(api.quota, lambda: api.uow, client)
    day = QuotaPeriod.day_containing(charge._now)
    # WHEN 5 items are charged
    counted, refusal = charge.take_up_to(5)
    # THEN the first 3 count, in the day and the month; the rest is the daily refusal
    assert counted == 3
    assert isinstance(refusal, DailyLimitExceeded)
    assert api.quota.read(client.id, day) == 3
    assert api.quota.read(client.id, charge.period) == 3
    # AND one item not written gives back one in both
    charge.give_back(1)
    assert api.quota.read(client.id, day) == 2
    assert api.quota.read(client.id, charge.period) == 2


def test_a_single_send_may_carry_its_key_in_the_body() -> None:
    # GIVEN a send whose body carries idempotency_key, as a batch item does
    api = Api()
    body = _inline(idempotency_key="signup-7")
    # WHEN it is sent twice, then with a header naming another key
    first = api.send(body)
    again = api.send(body)
    clash = api.send(body, Idempotency_Key="other")
    # THEN the second answers as the first, one row; the clash is refused
    assert first == again
    assert first[0] == 202
    assert len(api.uow.messages.rows) == 1
    assert clash[0] == 422
    assert clash[1]["error"]["details"][0]["field"] == "idempotency_key"


def test_a_batch_asks_for_each_named_smtp_config_once_per_call() -> None:
    # GIVEN 100 items naming the same relay and one naming an unknown one
    from mailroom.domain.errors import UnknownSmtpConfig
    from mailroom.domain.tenancy import KeyKind
    from mailroom.services import batch_send

    api = Api()
    relay_id = uuid.uuid4()
    asked: list[str] = []

    def resolve(ref: str) -> uuid.UUID:
        asked.append(ref)
        if ref != "relay":
            raise UnknownSmtpConfig("no such SMTP configuration", details=[])
        return relay_id

    items = [_welcome(f"u{n}@example.com", smtp_config="relay") for n in range(100)]
    items[7]["smtp_config"] = "nope"
    items[9]["smtp_config"] = "nope"
    context = batch_send.BatchContext(
        api.client.client,
        KeyKind.LIVE,
        "trace",
        batch_send.BatchValidation.PERMISSIVE,
        resolve_relay=resolve,
    )

    # WHEN the items are validated
    valid, problems = batch_send.validate_items(
        api.services.templates, api.services.renderer, api.services.send_limits, items, context
    )

    # THEN the known relay was read once, each unknown one refused its item
    assert asked.count("relay") == 1
    assert [p.index for p in problems] == [7, 9]
    assert len(valid) == 98
    assert {prepared.message.options.smtp_config_id for _, _, prepared in valid} == {str(relay_id)}
