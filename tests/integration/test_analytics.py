"""Analytics rollups, reputation and the metrics views (issue 21 items 4-6) on real PostgreSQL.

The rollups are checked against a direct count over the raw message events
(SQL written separately from the roll-up's Python), after a randomised run
in which writers insert events while two roll-ups run side by side.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text

from mailroom.adapters.db.tables import MessageEventRow, MessageRow
from mailroom.adapters.db.unit_of_work import Database, SqlUnitOfWork
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.analytics import COUNTERS
from mailroom.domain.reputation import ReputationState
from mailroom.domain.tenancy import Actor, Scope
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.analytics import analytics_routes
from mailroom.entrypoints.api import create_api, send_routes
from mailroom.entrypoints.batches import batch_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.services import analytics, reputation
from mailroom.services.api_keys import KeySpec, issue_key
from mailroom.services.clients import RegisteredClient, register_client
from tests.events import FakeLambdaContext, load_event, request_event
from tests.integration.conftest import stored_client
from tests.integration.test_pipeline import database_url_of

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-with-enough-entropy"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DOMAINS = ["gmail.com", "outlook.com", "yahoo.fr", "example.org", "hotmail.co.uk"]
SENDERS = ["news@acme.test", "Acme <billing@mail.acme.test>"]
TEMPLATES_USED = ["welcome", "receipt", "digest"]
TAGS = ["a", "b", "c"]


def add_messages(
    database: Database,
    client_id: uuid.UUID,
    count: int,
    rng: random.Random,
    *,
    is_test: bool = False,
    single: bool = False,
) -> list[uuid.UUID]:
    rows: list[dict[str, Any]] = []
    ids: list[uuid.UUID] = []
    for _ in range(count):
        ids.append(uuid.uuid4())
        to = [f"u{rng.randrange(10**6)}@{rng.choice(DOMAINS)}"]
        cc = [] if single or rng.random() < 0.7 else [f"c{rng.randrange(99)}@{rng.choice(DOMAINS)}"]
        rows.append(
            {
                "id": ids[-1],
                "client_id": client_id,
                "trace_id": "t",
                "template_name": rng.choice(TEMPLATES_USED),
                "from_address": rng.choice(SENDERS),
                "recipient": to[0],
                "to_addresses": to,
                "cc_addresses": cc,
                "options": {"tags": rng.sample(TAGS, rng.randrange(3))} if not single else {},
                "is_test": is_test,
                "status": "sent",
            }
        )
    with database.engine.begin() as connection:
        connection.execute(insert(MessageRow).values(rows))
    return ids


def random_event(message_id: uuid.UUID, rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(
        [
            "sent",
            "delivered",
            "bounced",
            "complained",
            "opened",
            "opened",
            "clicked",
            "unsubscribed",
            "suppressed",
            "failed",
            "accepted",
            "deferred",
        ]
    )
    detail: dict[str, Any] = {}
    if kind == "bounced":
        detail["reject_reason"] = rng.choice(["bounced", "invalid", "blocked", "other"])
    if kind in ("opened", "clicked"):
        detail["machine"] = rng.random() < 0.3
    if kind == "suppressed":
        detail["recipients"] = [{"address": f"s@{rng.choice(DOMAINS)}"}]
    # Spread over three days, some hours apart.
    at = NOW - timedelta(minutes=rng.randrange(3 * 24 * 60))
    return {"message_id": message_id, "type": kind, "detail": detail, "at": at}


def write_events(database: Database, events: list[dict[str, Any]], per_statement: int) -> None:
    """Many small transactions of multi-row statements: a batched writer's shape."""
    for start in range(0, len(events), per_statement):
        with database.engine.begin() as connection:
            connection.execute(
                insert(MessageEventRow).values(events[start : start + per_statement])
            )


# What the rollups must equal: counted straight from message_events and messages.
DIRECT_COUNT = """
WITH ev AS (
    SELECT e.id, e.message_id, e.type, e.detail, date_trunc('hour', e.at) AS hour,
           m.client_id, m.is_test,
           jsonb_array_length(m.to_addresses) + jsonb_array_length(m.cc_addresses)
             + jsonb_array_length(m.bcc_addresses) AS addressees
    FROM message_events e JOIN messages m ON m.id = e.message_id
), firsts AS (
    SELECT DISTINCT ON (message_id, type) id FROM ev
    WHERE type IN ('opened', 'clicked') AND coalesce(detail ->> 'machine', 'false') <> 'true'
    ORDER BY message_id, type, id
)
SELECT client_id, is_test, hour,
  sum(CASE WHEN type = 'sent' THEN addressees ELSE 0 END) AS sent,
  count(*) FILTER (WHERE type = 'delivered') AS delivered,
  count(*) FILTER (WHERE type = 'bounced' AND detail ->> 'reject_reason' IN ('bounced', 'invalid'))
    AS hard_bounces,
  count(*) FILTER (WHERE type = 'bounced'
                   AND coalesce(detail ->> 'reject_reason', '') NOT IN ('bounced', 'invalid'))
    AS soft_bounces,
  count(*) FILTER (WHERE type = 'complained') AS complaints,
  count(*) FILTER (WHERE type = 'opened') AS opens,
  count(*) FILTER (WHERE type = 'opened' AND detail ->> 'machine' = 'true') AS machine_opens,
  count(*) FILTER (WHERE type = 'opened' AND id IN (SELECT id FROM firsts)) AS unique_opens,
  count(*) FILTER (WHERE type = 'clicked') AS clicks,
  count(*) FILTER (WHERE type = 'clicked' AND detail ->> 'machine' = 'true') AS machine_clicks,
  count(*) FILTER (WHERE type = 'clicked' AND id IN (SELECT id FROM firsts)) AS unique_clicks,
  count(*) FILTER (WHERE type = 'unsubscribed') AS unsubscribes,
  coalesce(sum(jsonb_array_length(detail -> 'recipients'))
           FILTER (WHERE type IN ('suppressed', 'recipients_suppressed')), 0) AS suppressed,
  count(*) FILTER (WHERE type = 'failed') AS failed
FROM ev
GROUP BY client_id, is_test, hour
"""


def direct_counts(database: Database) -> dict[tuple[Any, ...], dict[str, int]]:
    with database.engine.connect() as connection:
        rows = connection.execute(text(DIRECT_COUNT)).mappings().all()
    found = {}
    for row in rows:
        counts = {name: int(row[name]) for name in COUNTERS}
        if any(counts.values()):
            found[(row["client_id"], row["is_test"], row["hour"])] = counts
    return found


def rolled_counts(
    database: Database, dimension: str = "all"
) -> dict[tuple[Any, ...], dict[str, int]]:
    sums = ", ".join(f"sum({name}) AS {name}" for name in COUNTERS)
    table = "analytics_hourly" if dimension == "full" else "analytics_hourly_by"
    where = "" if dimension == "full" else f"WHERE dimension = '{dimension}'"
    with database.engine.connect() as connection:
        rows = (
            connection.execute(
                text(
                    f"SELECT client_id, is_test, hour, {sums} FROM {table} {where} "
                    "GROUP BY client_id, is_test, hour"
                )
            )
            .mappings()
            .all()
        )
    return {
        (row["client_id"], row["is_test"], row["hour"]): {n: int(row[n]) for n in COUNTERS}
        for row in rows
        if any(int(row[n]) for n in COUNTERS)
    }


def test_rollups_equal_a_direct_count_after_a_randomised_concurrent_run(database: Database) -> None:
    # GIVEN two clients' messages, live and test, and events written by three
    # writers in multi-row statements while two roll-ups run side by side
    rng = random.Random(2121)
    first, second = stored_client(database), stored_client(database)
    messages = (
        add_messages(database, first.id, 120, rng)
        + add_messages(database, second.id, 60, rng)
        + add_messages(database, first.id, 30, rng, is_test=True)
    )
    events = [random_event(rng.choice(messages), rng) for _ in range(3000)]
    # Several opens and clicks of the same message in one batch and across batches.
    events += [
        {**random_event(messages[0], rng), "type": t, "detail": {"machine": False}}
        for t in ["opened", "opened", "clicked", "clicked"] * 5
    ]
    stop = threading.Event()
    failures: list[BaseException] = []

    def roller() -> None:
        try:
            while not stop.is_set():
                analytics.roll_up(SqlUnitOfWork(database), batch_size=rng.choice([7, 50, 300]))
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    writers = [
        threading.Thread(target=write_events, args=(database, events[i::3], size))
        for i, size in enumerate([1, 25, 200])
    ]
    rollers = [threading.Thread(target=roller) for _ in range(2)]
    for thread in [*rollers, *writers]:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in rollers:
        thread.join()
    # WHEN a last roll-up takes what is left
    analytics.roll_up(SqlUnitOfWork(database))
    # THEN nothing failed, the queue is empty, and every rollup equals the direct count
    assert failures == []
    with SqlUnitOfWork(database) as uow:
        assert uow.analytics.pending() == 0
    expected = direct_counts(database)
    assert sum(c["unique_opens"] for c in expected.values()) > 0
    # Every counter per hour; a message's unique open (click) per client: it is
    # counted once, but in the hour of the first human open the roll-up saw,
    # which is not the lowest id when a writer commits a lower id late.
    for dimension in ("all", "full", "queue", "template", "sending_domain", "recipient_group"):
        rolled = rolled_counts(database, dimension)
        assert per_hour(rolled) == per_hour(expected), dimension
        assert uniques(rolled) == uniques(expected), dimension


UNIQUE = ("unique_opens", "unique_clicks")


def per_hour(
    counts: dict[tuple[Any, ...], dict[str, int]],
) -> dict[tuple[Any, ...], dict[str, int]]:
    trimmed = {k: {n: v for n, v in c.items() if n not in UNIQUE} for k, c in counts.items()}
    return {k: c for k, c in trimmed.items() if any(c.values())}


def uniques(counts: dict[tuple[Any, ...], dict[str, int]]) -> dict[tuple[Any, ...], list[int]]:
    found: dict[tuple[Any, ...], list[int]] = {}
    for (client_id, is_test, _), c in counts.items():
        totals = found.setdefault((client_id, is_test), [0, 0])
        totals[0] += c["unique_opens"]
        totals[1] += c["unique_clicks"]
    return found


def test_each_tag_counts_the_events_of_messages_carrying_it(database: Database) -> None:
    # GIVEN messages with and without tags, and their events rolled up
    rng = random.Random(7)
    client = stored_client(database)
    messages = add_messages(database, client.id, 40, rng)
    write_events(database, [random_event(rng.choice(messages), rng) for _ in range(400)], 100)
    analytics.roll_up(SqlUnitOfWork(database))
    # THEN tag "a" holds exactly the events of messages tagged "a"
    with database.engine.connect() as connection:
        direct = connection.execute(
            text(
                "SELECT count(*) FROM message_events e JOIN messages m ON m.id = e.message_id "
                "WHERE e.type = 'delivered' AND m.options -> 'tags' ? 'a'"
            )
        ).scalar_one()
        rolled = connection.execute(
            text(
                "SELECT coalesce(sum(delivered), 0) FROM analytics_hourly_by "
                "WHERE dimension = 'tag' AND value = 'a'"
            )
        ).scalar_one()
    assert direct > 0
    assert rolled == direct


# --- the API ------------------------------------------------------------------------


class Api:
    def __init__(self, database: Database, redis_url: str, queue_url: str) -> None:
        self.settings = Settings(
            database_url=database_url_of(database),
            redis_url=redis_url,
            queue_url=queue_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        )
        self.services: Services = bootstrap(self.settings)
        self.client: RegisteredClient = register_client(
            self.services.uow(), self.services.hasher, name=f"acme-{uuid.uuid4().hex[:8]}"
        )
        provider = lambda: self.services  # noqa: E731 - the routes take a provider
        self.api = create_api(
            [send_routes(provider), batch_routes(provider), analytics_routes(provider)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
            client_gate=ClientGate(provider),
        )
        self.admin_api = create_api(
            admin_routes(provider), max_request_bytes=lambda: self.settings.max_request_bytes
        )

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        key: tuple[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        api_key, secret = key or (self.client.api_key, self.client.api_secret)
        event = request_event(
            method, path, query=query, body=body, X_Api_Key=api_key, X_Api_Secret=secret
        )
        answer = self.api.resolve(event, FakeLambdaContext())
        return answer["statusCode"], json.loads(answer["body"])

    def admin(self, method: str, path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
        event = request_event(method, path, query=query, Authorization=f"Bearer {ADMIN_TOKEN}")
        answer = self.admin_api.resolve(event, FakeLambdaContext())
        return answer["statusCode"], json.loads(answer["body"])

    def send(self) -> tuple[int, dict[str, Any]]:
        return self.call(
            "POST", "/v1/send", body=json.loads(load_event("send/send-welcome")["body"])
        )


@pytest.fixture
def api(database: Database, redis_url: str, queue_url: str) -> Api:
    return Api(database, redis_url, queue_url)


def events_at(
    message_ids: list[uuid.UUID], kind: str, at: datetime, **detail: Any
) -> list[dict[str, Any]]:
    return [{"message_id": m, "type": kind, "detail": detail, "at": at} for m in message_ids]


def test_a_series_answers_in_the_callers_zone_with_filters(api: Api, database: Database) -> None:
    # GIVEN 10 single-recipient messages sent at 22:30 UTC on Dec 5 and 5 at 01:10 UTC on Dec 6
    rng = random.Random(3)
    client_id = api.client.client.id
    late = add_messages(database, client_id, 10, rng, single=True)
    early = add_messages(database, client_id, 5, rng, single=True)
    write_events(
        database,
        events_at(late, "sent", datetime(2026, 12, 5, 22, 30, tzinfo=UTC))
        + events_at(early, "sent", datetime(2026, 12, 6, 1, 10, tzinfo=UTC))
        + events_at(
            late[:2], "bounced", datetime(2026, 12, 5, 23, 0, tzinfo=UTC), reject_reason="bounced"
        ),
        100,
    )
    analytics.roll_up(api.services.uow())
    # WHEN the client asks by day in UTC and in Asia/Tokyo (UTC+9)
    query = {"from": "2026-12-05", "to": "2026-12-07", "granularity": "day"}
    status, utc = api.call("GET", "/v1/analytics/overview", {**query, "tz": "UTC"})
    assert status == 200, utc
    status, tokyo = api.call("GET", "/v1/analytics/bounces", {**query, "tz": "Asia/Tokyo"})
    assert status == 200, tokyo
    # THEN UTC splits 10 / 5 across the two days, Tokyo puts all 15 on its Dec 6
    assert [p["sent"] for p in utc["series"]] == [10, 5]
    assert [p["sent"] for p in tokyo["series"]] == [0, 15]
    assert tokyo["series"][1]["start"] == "2026-12-06T00:00:00+09:00"
    assert utc["totals"]["bounce_rate"] == pytest.approx(2 / 15, abs=1e-6)
    assert utc["range"]["exact"] is True
    # AND a half-hour zone says its days are not exact
    _, kolkata = api.call("GET", "/v1/analytics/delivery", {**query, "tz": "Asia/Kolkata"})
    assert kolkata["range"]["exact"] is False
    # AND filters narrow it: one template, and a template with a recipient group
    template = "welcome"
    _, one = api.call("GET", "/v1/analytics/overview", {**query, "template": template})
    _, two = api.call(
        "GET", "/v1/analytics/overview", {**query, "template": template, "recipient_group": "gmail"}
    )
    with database.engine.connect() as connection:
        per_template = connection.execute(
            text("SELECT count(*) FROM messages WHERE client_id = :c AND template_name = :t"),
            {"c": client_id, "t": template},
        ).scalar_one()
        per_both = connection.execute(
            text(
                "SELECT count(*) FROM messages WHERE client_id = :c AND template_name = :t "
                "AND (recipient LIKE '%@gmail.com')"
            ),
            {"c": client_id, "t": template},
        ).scalar_one()
    assert one["totals"]["sent"] == per_template
    assert two["totals"]["sent"] == per_both
    # AND the operator's view across clients sees the same numbers for this client
    status, admin = api.admin(
        "GET", "/admin/analytics/overview", {**query, "client_id": str(client_id)}
    )
    assert status == 200, admin
    assert admin["totals"]["sent"] == 15


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "2026-01-01", "to": "2026-03-01", "granularity": "hour"}, "to"),
        ({"from": "2024-01-01", "to": "2026-03-01"}, "to"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"tz": "../../etc/passwd"}, "tz"),
        ({"campaign": "x"}, "campaign"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "from"),
        ({"tag": "a", "template": "welcome"}, "tag"),
        ({"recipient_group": "aol"}, "recipient_group"),
        ({"from": "0001-01-01T00:00:00+14:00"}, "from"),
    ],
)
def test_bad_analytics_input_is_a_clear_422(api: Api, query: dict[str, str], field: str) -> None:
    status, body = api.call("GET", "/v1/analytics/overview", query)
    assert status == 422, body
    assert body["error"]["details"][0]["field"] == field


def test_a_key_without_analytics_read_is_refused(api: Api) -> None:
    # GIVEN a send-only key of the client
    issued = issue_key(
        api.services.uow(),
        api.services.hasher,
        api.client.client.id,
        KeySpec(name="sender", scopes=[Scope.EMAIL_SEND.value]),
        actor=Actor("test"),
    )
    status, body = api.call("GET", "/v1/analytics/overview", key=(issued.key.id, issued.secret))
    assert status == 403
    assert body["error"]["code"] == "insufficient_scope"


# --- reputation ------------------------------------------------------------------------


def judge(api: Api, at: datetime = NOW) -> list[reputation.Change]:
    analytics.roll_up(api.services.uow())
    return reputation.evaluate(
        api.services.uow(), api.services.credential_versions, api.services.metrics, now=at
    )


def state_of(api: Api) -> str:
    status, body = api.call("GET", "/v1/analytics/reputation")
    assert status == 200, body
    return str(body["state"])


def sends_and_bounces(
    api: Api,
    database: Database,
    sends: int,
    bounces: int,
    complaints: int = 0,
    *,
    at: datetime = NOW - timedelta(hours=1),
    is_test: bool = False,
) -> None:
    rng = random.Random(sends * 7 + bounces)
    ids = add_messages(database, api.client.client.id, sends, rng, single=True, is_test=is_test)
    write_events(
        database,
        events_at(ids, "sent", at)
        + events_at(ids[:bounces], "bounced", at, reject_reason="bounced")
        + events_at(ids[bounces : bounces + complaints], "complained", at),
        500,
    )


def test_warn_throttle_and_pause_kick_in_at_the_thresholds_and_lift(
    api: Api, database: Database
) -> None:
    # GIVEN 199 sends with 30 % bounces: under 200 sends nothing is decided
    sends_and_bounces(api, database, 199, 60)
    judge(api)
    assert state_of(api) == "ok"
    # WHEN test-mode traffic adds 1,000 sends with every one bounced, still nothing
    sends_and_bounces(api, database, 1000, 1000, is_test=True)
    judge(api)
    assert state_of(api) == "ok"
    # WHEN live traffic makes it 1,000 sends with 2.5 % hard bounces: warn
    database_reset_live(database, api)
    sends_and_bounces(api, database, 1000, 25)
    changes = judge(api)
    assert [c.after for c in changes if c.sending_domain == ""] == [ReputationState.WARN]
    assert state_of(api) == "warn"
    # 2.4 % would not have: the line is inclusive at 2.5 %
    # AND at 4 % (40 of 1,000 with 15 more bounces): throttle; sends still go
    extra_bounces(api, database, 15)
    judge(api)
    assert state_of(api) == "throttle"
    assert api.send()[0] == 202
    # AND the throttle lifts by itself when the rate falls back (1,000 clean sends)
    sends_and_bounces(api, database, 1000, 0)
    judge(api)
    assert state_of(api) == "ok"
    # WHEN complaints reach 0.3 % of the window: pause
    sends_and_bounces(api, database, 1000, 0, complaints=10)
    judge(api)
    status, body = api.call("GET", "/v1/analytics/reputation")
    assert body["state"] == "pause"
    assert body["paused"]["reason"].startswith("pause:")
    # THEN live sends answer 403 sending_paused with the reason, on all three routes
    status, refused = api.send()
    assert status == 403
    assert refused["error"]["code"] == "sending_paused"
    assert "complaint rate" in refused["error"]["message"]
    status, batch = api.call(
        "POST", "/v1/send/batch", body=[json.loads(load_event("send/send-welcome")["body"])]
    )
    assert (status, batch["error"]["code"]) == (403, "sending_paused")
    status, bulk = api.call(
        "POST", "/v1/batches", body=json.loads(load_event("batches/create-batch")["body"])
    )
    assert (status, bulk["error"]["code"]) == (403, "sending_paused")
    # AND the pause is sticky while the rates fall
    sends_and_bounces(api, database, 3000, 0)
    judge(api)
    assert state_of(api) == "pause"
    # AND an audit entry names it
    with database.engine.connect() as connection:
        actions = (
            connection.execute(
                text("SELECT action FROM admin_audit_log WHERE target_id = :c ORDER BY id"),
                {"c": str(api.client.client.id)},
            )
            .scalars()
            .all()
        )
    assert "reputation.pause" in actions
    # WHEN an operator lifts it
    status, lifted = api.admin("POST", f"/admin/clients/{api.client.client.id}/reputation/lift")
    assert status == 200, lifted
    # THEN sends are accepted again and the next judgement starts from the lift
    assert api.send()[0] == 202
    judge(api, NOW + timedelta(minutes=1))
    assert state_of(api) == "ok"
    with database.engine.connect() as connection:
        lifted_actions = (
            connection.execute(
                text("SELECT action FROM admin_audit_log WHERE target_id = :c"),
                {"c": str(api.client.client.id)},
            )
            .scalars()
            .all()
        )
    assert "reputation.lift" in lifted_actions


def database_reset_live(database: Database, api: Api) -> None:
    """Forget the client's rollups (its rows stay): the next step starts a clean window."""
    with database.engine.begin() as connection:
        connection.execute(
            text("DELETE FROM analytics_hourly_by WHERE client_id = :c AND is_test = false"),
            {"c": api.client.client.id},
        )


def extra_bounces(api: Api, database: Database, count: int) -> None:
    rng = random.Random(count)
    ids = add_messages(database, api.client.client.id, count, rng, single=True)
    write_events(
        database,
        events_at(ids, "bounced", NOW - timedelta(hours=1), reject_reason="invalid"),
        500,
    )


def test_metrics_summaries_for_a_client_and_the_operator(api: Api, database: Database) -> None:
    # GIVEN 300 sends with 3 complaints an hour ago, rolled up and judged
    sends_and_bounces(
        api, database, 300, 0, complaints=3, at=datetime.now(UTC) - timedelta(hours=1)
    )
    judge(api, datetime.now(UTC))
    # WHEN the client reads /v1/metrics and the operator /admin/metrics
    status, mine = api.call("GET", "/v1/metrics")
    assert status == 200, mine
    status, everyone = api.admin("GET", "/admin/metrics")
    assert status == 200, everyone
    # THEN both count the window, and the operator sees the client paused (1 % complaints)
    assert mine["windows"]["last_24h"]["sent"] == 300
    assert mine["windows"]["last_24h"]["complaint_rate"] == pytest.approx(0.01)
    assert mine["reputation"]["state"] == "pause"
    assert everyone["windows"]["last_7d"]["sent"] >= 300
    assert [p["client_id"] for p in everyone["reputation"]["paused"]] == [str(api.client.client.id)]
    assert everyone["roll_up_backlog"] == 0
    status, listed = api.admin("GET", "/admin/reputation")
    assert status == 200
    assert listed["clients"][0]["state"] == "pause"
