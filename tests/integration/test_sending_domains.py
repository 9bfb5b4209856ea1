"""Sending domains (issue 16) on real PostgreSQL, a DNS server on a local UDP socket,
an SMTP sink and moto's SES: register, publish, verify, send signed, rotate, re-check."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dkim as dkimpy
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from devstack import demo_client
from mailroom.adapters.db.unit_of_work import Database
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.model import RenderedEmail
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.entrypoints.admin import admin_routes
from mailroom.entrypoints.api import create_api, send_routes
from mailroom.entrypoints.client_gate import ClientGate
from mailroom.entrypoints.domain_checks import run_domain_checks
from mailroom.entrypoints.domains import domain_routes
from mailroom.entrypoints.schedules import schedule_routes
from mailroom.services import delivery
from tests.events import FakeLambdaContext, request_event
from tests.fakes import RecordingQueue
from tests.integration.conftest import SmtpSink
from tests.integration.dns_server import LocalDns, running_dns

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN_TOKEN = "integration-admin-token-for-sending-domains"
PROPS = json.loads((TEMPLATES / "welcome" / "sample.json").read_text())


class Stack:
    """The domain, send and admin routes over one set of services, and a worker's delivery."""

    def __init__(self, database_url: str, redis_url: str, dns: LocalDns, **settings: Any) -> None:
        self.settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            templates_dir=TEMPLATES,
            admin_token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            secrets_encryption_keys=SecretStr(SecretKeyring.generate_setting()),
            dns_resolver=dns.address,
            dns_timeout_seconds=0.5,
            bounce_mx_host="inbound.mailroom.test",
            **{"sender_verification": "live", **settings},
        )
        self.queue = RecordingQueue()
        self.services: Services = bootstrap(self.settings, queue=self.queue)
        provider = lambda: self.services  # noqa: E731 - the routes take a provider
        self.api = create_api(
            [send_routes(provider), domain_routes(provider), schedule_routes(provider)],
            max_request_bytes=lambda: self.settings.max_request_bytes,
            client_gate=ClientGate(provider),
        )
        self.admin_api = create_api(
            admin_routes(provider), max_request_bytes=lambda: self.settings.max_request_bytes
        )

    def call(
        self, method: str, path: str, client: dict[str, Any], body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        event = request_event(
            method, path, body=body, X_Api_Key=client["key"], X_Api_Secret=client["secret"]
        )
        answer = self.api.resolve(event, FakeLambdaContext())
        return answer["statusCode"], json.loads(answer["body"])

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        event = request_event(method, path, body=body, Authorization=f"Bearer {ADMIN_TOKEN}")
        answer = self.admin_api.resolve(event, FakeLambdaContext())
        return answer["statusCode"], json.loads(answer["body"])

    def client(self) -> dict[str, Any]:
        status, body = self.admin("POST", "/admin/clients", {"name": f"c-{uuid.uuid4().hex[:8]}"})
        assert status == 201, body
        return {**body, "key": body["api_key"], "secret": body["api_secret"]}

    def send(self, client: dict[str, Any], sender: str) -> tuple[int, dict[str, Any]]:
        body = {"template": "welcome", "from": sender, "to": ["ada@example.org"], "props": PROPS}
        return self.call("POST", "/v1/send", client, body)

    def deliver(self, message_id: str, *, with_sender_policy: bool = False) -> None:
        outcome = delivery.deliver_message(
            self.services.uow(),
            self.services.templates,
            self.services.renderer,
            self.services.providers,
            message_id=uuid.UUID(message_id),
            max_attempts=3,
            # The worker's VERP return path, list headers and Feedback-ID.
            sender_policy=self.services.sender_policy if with_sender_policy else None,
        )
        assert outcome.result.value == "sent", outcome


def publish_all(dns: LocalDns, domain: dict[str, Any]) -> None:
    for record in domain["records"]:
        dns.publish(record["type"], record["name"], record["value"], record["priority"])


def dkim_dns(dns: LocalDns) -> Any:
    """dkimpy's DNS function, served from what the local DNS server publishes."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        values = dns.records.get((name.decode().rstrip(".").lower(), "TXT"))
        if not values:
            return None
        return "".join(part.strip('"') for part in values[0].split('" "')).encode()

    return lookup


@pytest.fixture
def local_dns() -> Iterator[LocalDns]:
    with running_dns() as server:
        yield server


def stack_of(
    database: Database, redis_url: str, local_dns: LocalDns, smtp_sink: SmtpSink, **settings: Any
) -> Stack:
    """A stack over the test's database, Redis, DNS server and SMTP sink, with ``settings``."""
    url = database.engine.url.render_as_string(hide_password=False)
    return Stack(
        url, redis_url, local_dns, smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, **settings
    )


@pytest.fixture
def stack(database: Database, redis_url: str, local_dns: LocalDns, smtp_sink: SmtpSink) -> Stack:
    return stack_of(database, redis_url, local_dns, smtp_sink)


def verified_domain(
    stack: Stack, local_dns: LocalDns, client: dict[str, Any], name: str
) -> dict[str, Any]:
    """``name`` registered by ``client``, its records published and found."""
    status, domain = stack.call("POST", "/v1/domains", client, {"domain": name})
    assert status == 201, domain
    publish_all(local_dns, domain)
    status, verified = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    assert verified["status"] == "verified", verified
    return verified


def _count(database: Database, table: str) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_register_publish_verify_then_send_signed_mail_that_dkimpy_verifies(
    stack: Stack, local_dns: LocalDns, smtp_sink: SmtpSink, database: Database
) -> None:
    # GIVEN a client that registers an internationalised domain
    client = stack.client()
    status, domain = stack.call("POST", "/v1/domains", client, {"domain": "Bücher.Example"})
    assert status == 201, domain
    assert (domain["domain"], domain["status"]) == ("xn--bcher-kva.example", "pending")
    purposes = {record["purpose"]: record for record in domain["records"]}
    assert set(purposes) == {"dkim", "spf", "return_path", "dmarc"}
    assert purposes["dkim"]["name"].endswith("._domainkey.xn--bcher-kva.example")
    assert purposes["dkim"]["value"].startswith("v=DKIM1; k=rsa; p=")
    assert purposes["return_path"] == {
        "type": "MX",
        "name": "bounces.xn--bcher-kva.example",
        "value": "inbound.mailroom.test",
        "purpose": "return_path",
        "required": False,
        "priority": 10,
    }
    # WHEN it sends from that domain before verifying it
    messages_before = _count(database, "messages")
    status, refused = stack.send(client, "Shop <shop@bücher.example>")
    # THEN the send is refused and nothing is written
    assert (status, refused["error"]["code"]) == (422, "sender_not_verified"), refused
    assert _count(database, "messages") == messages_before
    # WHEN the records are published and the domain verified
    publish_all(local_dns, domain)
    status, verified = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    assert status == 200, verified
    assert (verified["status"], verified["retry_later"]) == ("verified", False)
    assert {check["result"] for check in verified["checks"]} == {"found"}
    # THEN the send is accepted, and the mail the SMTP relay receives is signed
    status, accepted = stack.send(client, "Shop <shop@bücher.example>")
    assert status == 202, accepted
    stack.deliver(accepted["id"])
    (mail,) = smtp_sink.received
    assert mail.data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert b"d=xn--bcher-kva.example" in mail.data.split(b"\r\n\r\n")[0]
    assert dkimpy.verify(mail.data, dnsfunc=dkim_dns(local_dns))
    # AND another domain of the same client is still refused
    status, other = stack.send(client, "shop@other.example")
    assert (status, other["error"]["code"]) == (422, "sender_not_verified")


def test_a_domain_key_never_signs_another_clients_mail(
    database: Database, redis_url: str, local_dns: LocalDns, smtp_sink: SmtpSink
) -> None:
    # GIVEN sender verification off (an operator's choice), and client A's
    # verified domain
    stack = stack_of(database, redis_url, local_dns, smtp_sink, sender_verification="off")
    owner, other = stack.client(), stack.client()
    verified_domain(stack, local_dns, owner, "shop.example")
    # WHEN client B sends as that domain (allowed: nothing checks senders), then A does
    status, theirs = stack.send(other, "Shop <news@shop.example>")
    assert status == 202, theirs
    stack.deliver(theirs["id"])
    status, mine = stack.send(owner, "Shop <news@shop.example>")
    assert status == 202, mine
    stack.deliver(mine["id"])
    # THEN B's mail goes out without A's signature, and A's is signed and verifies
    unsigned, signed = smtp_sink.received
    assert b"DKIM-Signature:" not in unsigned.data.split(b"\r\n\r\n")[0]
    assert signed.data.startswith(b"DKIM-Signature: ")
    assert dkimpy.verify(signed.data, dnsfunc=dkim_dns(local_dns))


def test_the_return_path_is_on_the_senders_domain_only_once_its_bounce_mx_is_found(
    database: Database, redis_url: str, local_dns: LocalDns, smtp_sink: SmtpSink
) -> None:
    # GIVEN VERP keys, a platform bounce domain, and no caching of domain answers
    stack = stack_of(
        database,
        redis_url,
        local_dns,
        smtp_sink,
        bounce_signing_keys=SecretStr("k1:" + "S" * 43),
        bounce_domain="bounces.mailroom.test",
        dkim_key_cache_seconds=0,
    )
    client = stack.client()
    _, domain = stack.call("POST", "/v1/domains", client, {"domain": "verp.example"})
    # WHEN the domain is verified with every record but the bounces.<domain> MX
    publish_all(
        local_dns, {"records": [r for r in domain["records"] if r["purpose"] != "return_path"]}
    )
    _, verified = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    assert verified["status"] == "verified", verified["checks"]
    status, accepted = stack.send(client, "Shop <shop@verp.example>")
    assert status == 202, accepted
    stack.deliver(accepted["id"], with_sender_policy=True)
    # THEN its bounces go to the platform's domain: bounces.verp.example reaches nobody yet
    first = smtp_sink.received[-1].envelope_from
    assert first.startswith(f"b+{accepted['id'].replace('-', '')}.k1-")
    assert first.endswith("@bounces.mailroom.test")
    # WHEN the MX is published and found
    publish_all(
        local_dns, {"records": [r for r in domain["records"] if r["purpose"] == "return_path"]}
    )
    _, again = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    assert {c["purpose"]: c["result"] for c in again["checks"]}["return_path"] == "found"
    _, accepted = stack.call(
        "POST",
        "/v1/send",
        client,
        {
            "template": "welcome",
            "from": "shop@verp.example",
            "to": ["ada@example.org"],
            "props": PROPS,
        },
    )
    stack.deliver(accepted["id"], with_sender_policy=True)
    # THEN the return path is on the sender's own bounce domain
    assert smtp_sink.received[-1].envelope_from.endswith("@bounces.verp.example")
    # AND only for that client: another client sending as it gets no bounces.verp.example
    policy = stack.services.sender_policy
    assert policy.receives_bounces is not None
    assert policy.receives_bounces(uuid.UUID(client["id"]), "verp.example")
    assert not policy.receives_bounces(uuid.uuid4(), "verp.example")


def test_one_record_missing_stays_pending_and_a_dns_timeout_says_retry_later(
    stack: Stack, local_dns: LocalDns
) -> None:
    # GIVEN a registered domain with every record but SPF published
    client = stack.client()
    _, domain = stack.call("POST", "/v1/domains", client, {"domain": "shop.example"})
    for record in domain["records"]:
        if record["purpose"] != "spf":
            local_dns.publish(record["type"], record["name"], record["value"], record["priority"])
    # WHEN it is verified
    status, answer = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    # THEN it stays pending, and the checks say which record is missing
    assert (status, answer["status"], answer["retry_later"]) == (200, "pending", False)
    results = {check["purpose"]: check["result"] for check in answer["checks"]}
    assert results == {"dkim": "found", "spf": "missing", "return_path": "found", "dmarc": "found"}
    # WHEN SPF is published but the DNS server stops answering for the domain
    publish_all(local_dns, {"records": [r for r in domain["records"] if r["purpose"] == "spf"]})
    local_dns.silent.add("shop.example")
    status, answer = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    # THEN the status is unchanged and the caller is told to retry later
    assert (status, answer["status"], answer["retry_later"]) == (200, "pending", True)
    assert {c["purpose"]: c["result"] for c in answer["checks"]}["spf"] == "timeout"
    # WHEN DNS answers again
    local_dns.silent.clear()
    _, answer = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    assert answer["status"] == "verified"


def test_records_that_disappear_are_flagged_by_the_scheduled_recheck_and_audited(
    stack: Stack, local_dns: LocalDns
) -> None:
    # GIVEN a verified domain
    client = stack.client()
    _, domain = stack.call("POST", "/v1/domains", client, {"domain": "gone.example"})
    publish_all(local_dns, domain)
    stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    # WHEN its DKIM record is withdrawn and the scheduled re-check runs (due now)
    dkim_name = next(r["name"] for r in domain["records"] if r["purpose"] == "dkim")
    local_dns.withdraw("TXT", dkim_name)
    services = bootstrap(
        stack.settings.model_copy(update={"domain_recheck_seconds": 60}), queue=stack.queue
    )
    _backdate_checks(stack)
    counts = run_domain_checks({}, None, services)
    # THEN the domain is failing, sends from it are refused, and the audit log tells its owner
    assert counts["failing"] >= 1, counts
    status, found = stack.call("GET", f"/v1/domains/{domain['id']}", client)
    assert (status, found["status"]) == (200, "failing")
    status, _ = stack.send(client, "a@gone.example")
    assert status == 422
    status, audit = stack.admin("GET", "/admin/audit", None)
    entries = audit.get("entries", [])
    failing = [e for e in entries if e["action"] == "domain.failing"]
    assert failing, entries
    assert failing[-1]["target_id"] == domain["id"], entries
    assert failing[-1]["actor"] == "system:domain-check"


def _backdate_checks(stack: Stack) -> None:
    database = Database(stack.settings.database_url)
    with database.engine.begin() as connection:
        connection.execute(
            text("UPDATE sending_domains SET last_checked_at = now() - interval '2 days'")
        )
    database.dispose()


def test_rotation_publishes_a_new_selector_and_both_signatures_verify(
    stack: Stack, local_dns: LocalDns, smtp_sink: SmtpSink
) -> None:
    # GIVEN a verified domain and a message signed with its first key
    client = stack.client()
    _, domain = stack.call("POST", "/v1/domains", client, {"domain": "rotate.example"})
    publish_all(local_dns, domain)
    stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    _, first = stack.send(client, "a@rotate.example")
    stack.deliver(first["id"])
    # WHEN the key is rotated
    status, rotated = stack.call("POST", f"/v1/domains/{domain['id']}/rotate-dkim", client)
    assert status == 200, rotated
    states = {s["selector"]: s["state"] for s in rotated["dkim_selectors"]}
    (old,) = [name for name, state in states.items() if state == "active"]
    (new,) = [name for name, state in states.items() if state == "next"]
    # AND the new selector is published and found by a verification
    new_record = next(r for r in rotated["records"] if r["name"].startswith(f"{new}._domainkey"))
    local_dns.publish("TXT", new_record["name"], new_record["value"])
    _, verified = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    states = {s["selector"]: s["state"] for s in verified["dkim_selectors"]}
    assert states == {old: "previous", new: "active"}
    # THEN a new message is signed with the new selector (a new worker process's cache)
    stack.services = bootstrap(stack.settings, queue=stack.queue)
    _, second = stack.send(client, "a@rotate.example")
    stack.deliver(second["id"])
    before, after = (mail.data for mail in smtp_sink.received)
    assert f"s={old};".encode() in before.split(b"\r\n\r\n")[0]
    assert f"s={new};".encode() in after.split(b"\r\n\r\n")[0]
    # AND both verify: the old key stays published until it is retired
    lookup = dkim_dns(local_dns)
    assert dkimpy.verify(before, dnsfunc=lookup)
    assert dkimpy.verify(after, dnsfunc=lookup)
    assert not dkimpy.verify(after.replace(b"Welcome", b"Welcom"), dnsfunc=lookup)
    _, retired = stack.call("POST", f"/v1/domains/{domain['id']}/retire-dkim", client)
    names = [r["name"] for r in retired["records"] if r["purpose"] == "dkim"]
    assert names == [f"{new}._domainkey.rotate.example"]


def test_bad_input_gets_clear_4xx_and_writes_nothing(stack: Stack, database: Database) -> None:
    # GIVEN two clients, one of which owns a domain
    owner, other = stack.client(), stack.client()
    status, owned = stack.call("POST", "/v1/domains", owner, {"domain": "owned.example"})
    assert status == 201
    domains_before = _count(database, "sending_domains")
    cases = [
        ("POST", "/v1/domains", {"domain": "not a domain"}, 422, "invalid_domain"),
        ("POST", "/v1/domains", {"domain": "user@owned.example"}, 422, "invalid_domain"),
        ("POST", "/v1/domains", {"domain": "localhost"}, 422, "invalid_domain"),
        ("POST", "/v1/domains", {"domain": 42}, 422, "validation_error"),
        ("POST", "/v1/domains", {"domain": "x.example", "extra": 1}, 422, "validation_error"),
        ("POST", "/v1/domains", {"domain": "OWNED.example."}, 409, "domain_taken"),
        ("GET", f"/v1/domains/{owned['id']}", None, 404, "domain_not_found"),
        ("POST", f"/v1/domains/{owned['id']}/verify", None, 404, "domain_not_found"),
        ("POST", f"/v1/domains/{owned['id']}/rotate-dkim", None, 404, "domain_not_found"),
        ("DELETE", f"/v1/domains/{owned['id']}", None, 404, "domain_not_found"),
        ("GET", f"/v1/domains/{uuid.uuid4()}", None, 404, "domain_not_found"),
        ("GET", "/v1/domains/not-a-uuid", None, 404, "domain_not_found"),
    ]
    for method, path, body, expected, code in cases:
        # WHEN the other client asks
        status, answer = stack.call(method, path, other, body)
        # THEN each is a clear 4xx with its code, and nothing is written
        assert (status, answer["error"]["code"]) == (expected, code), (method, path, answer)
        assert answer["error"]["message"]
    assert _count(database, "sending_domains") == domains_before
    # AND the owner registering it again is told it has it already
    status, again = stack.call("POST", "/v1/domains", owner, {"domain": "owned.example"})
    assert status == 409
    assert owned["id"] in again["error"]["message"]


def test_operators_manage_a_clients_domains_through_the_admin_api(stack: Stack) -> None:
    client = stack.client()
    status, created = stack.admin(
        "POST", f"/admin/clients/{client['id']}/domains", {"domain": "ops.example"}
    )
    assert status == 201, created
    status, listed = stack.admin("GET", f"/admin/clients/{client['id']}/domains")
    assert [d["domain"] for d in listed["domains"]] == ["ops.example"]
    status, own = stack.call("GET", "/v1/domains", client)
    assert [d["id"] for d in own["domains"]] == [created["id"]]
    status, _removed = stack.admin("DELETE", f"/admin/domains/{created['id']}")
    assert status == 200
    status, gone = stack.admin("GET", f"/admin/domains/{created['id']}")
    assert (status, gone["error"]["code"]) == (404, "domain_not_found")


def test_with_ses_the_domain_identity_is_created_and_its_dkim_cnames_shown(
    database: Database, redis_url: str, local_dns: LocalDns, aws: str
) -> None:
    # GIVEN SES in the provider order (moto's SES)
    url = database.engine.url.render_as_string(hide_password=False)
    stack = Stack(url, redis_url, local_dns, provider_order="ses,smtp")
    client = stack.client()
    # WHEN a domain is registered
    status, domain = stack.call("POST", "/v1/domains", client, {"domain": "ses.example"})
    # THEN its DKIM records are SES's three CNAMEs, no key of ours, and SPF includes SES
    assert status == 201, domain
    cnames = [r for r in domain["records"] if r["purpose"] == "ses_dkim"]
    assert len(cnames) == 3
    assert domain["dkim_selectors"] == []
    assert all(r["value"].endswith(".dkim.amazonses.com") for r in cnames)
    spf = next(r for r in domain["records"] if r["purpose"] == "spf")
    assert spf["value"] == "v=spf1 include:amazonses.com ~all"
    # AND publishing them verifies the domain
    publish_all(local_dns, domain)
    _, verified = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    assert verified["status"] == "verified", verified["checks"]


def _ses_identity_exists(name: str) -> bool:
    sesv2 = boto3.client("sesv2", region_name="us-east-1")
    try:
        sesv2.get_email_identity(EmailIdentity=name)
    except sesv2.exceptions.NotFoundException:
        return False
    return True


def test_deleting_a_domain_deletes_the_ses_identity_it_created(
    database: Database, redis_url: str, local_dns: LocalDns, aws: str
) -> None:
    # GIVEN a domain registered with SES carrying the mail (moto's SES)
    url = database.engine.url.render_as_string(hide_password=False)
    stack = Stack(url, redis_url, local_dns, provider_order="ses,smtp")
    client = stack.client()
    name = f"gone-{uuid.uuid4().hex[:8]}.example"
    status, domain = stack.call("POST", "/v1/domains", client, {"domain": name})
    assert status == 201, domain
    assert _ses_identity_exists(name)
    # WHEN the client deletes it
    status, removed = stack.call("DELETE", f"/v1/domains/{domain['id']}", client)
    # THEN the domain and its SES identity are both gone
    assert status == 200, removed
    assert not _ses_identity_exists(name)
    status, _ = stack.call("GET", f"/v1/domains/{domain['id']}", client)
    assert status == 404


def test_deleting_a_domain_whose_ses_identity_is_gone_already_succeeds(
    database: Database, redis_url: str, local_dns: LocalDns, aws: str
) -> None:
    # GIVEN a domain whose SES identity someone deleted by hand
    url = database.engine.url.render_as_string(hide_password=False)
    stack = Stack(url, redis_url, local_dns, provider_order="ses,smtp")
    client = stack.client()
    name = f"hand-{uuid.uuid4().hex[:8]}.example"
    _, domain = stack.call("POST", "/v1/domains", client, {"domain": name})
    boto3.client("sesv2", region_name="us-east-1").delete_email_identity(EmailIdentity=name)
    # WHEN the operator deletes the domain
    status, removed = stack.admin("DELETE", f"/admin/domains/{domain['id']}")
    # THEN it is removed all the same
    assert status == 200, removed
    assert _count(database, "sending_domains WHERE domain = '" + name + "'") == 0


def test_an_ses_identity_that_existed_before_registration_is_left_alone(
    database: Database, redis_url: str, local_dns: LocalDns, aws: str
) -> None:
    # GIVEN an SES identity the operator had before any client registered it
    name = f"kept-{uuid.uuid4().hex[:8]}.example"
    boto3.client("sesv2", region_name="us-east-1").create_email_identity(EmailIdentity=name)
    url = database.engine.url.render_as_string(hide_password=False)
    stack = Stack(url, redis_url, local_dns, provider_order="ses,smtp")
    client = stack.client()
    status, domain = stack.call("POST", "/v1/domains", client, {"domain": name})
    assert status == 201, domain
    # WHEN the domain is deleted
    status, _ = stack.call("DELETE", f"/v1/domains/{domain['id']}", client)
    # THEN Mailroom's record is gone and the identity it did not create stays
    assert status == 200
    assert _ses_identity_exists(name)


def test_make_dev_verifies_the_demo_clients_default_from_domain(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    # GIVEN the demo client the local runner creates, with sender verification on
    credentials, _ = demo_client.demo_credentials(
        stack.services, None, api_url="http://127.0.0.1:3000", token=ADMIN_TOKEN
    )
    client = {"key": credentials.api_key, "secret": credentials.api_secret}
    # WHEN the runner verifies its DEFAULT_FROM domain (twice: every start does)
    assert demo_client.verify_demo_domain(stack.services, credentials) == "example.com"
    assert demo_client.verify_demo_domain(stack.services, credentials) == "example.com"
    # THEN the demo client may send as it, and the mail is DKIM-signed
    status, accepted = stack.send(client, "Demo <demo@example.com>")
    assert status == 202, accepted
    stack.deliver(accepted["id"])
    assert smtp_sink.received[-1].data.startswith(b"DKIM-Signature: ")
    status, listed = stack.call("GET", "/v1/domains", client)
    assert [(d["domain"], d["status"]) for d in listed["domains"]] == [("example.com", "verified")]


def test_a_clients_own_tracking_host_is_used_once_its_cname_is_found(
    database: Database, redis_url: str, local_dns: LocalDns, smtp_sink: SmtpSink
) -> None:
    # GIVEN tracking on the service's host, and a client with a verified domain
    # No caching of domain answers: each tracked send sees the last check.
    stack = stack_of(
        database,
        redis_url,
        local_dns,
        smtp_sink,
        tracking_base_url="https://t.mailroom.test",
        dkim_key_cache_seconds=0,
    )
    client = stack.client()
    domain = verified_domain(stack, local_dns, client, "shop.example")
    path = f"/v1/domains/{domain['id']}/tracking-host"
    # WHEN it names a host outside the domain, THEN 422 and nothing changes
    status, refused = stack.call("PUT", path, client, {"host": "links.other.example"})
    assert (status, refused["error"]["code"]) == (422, "invalid_domain"), refused
    # WHEN it names links.shop.example
    status, named = stack.call("PUT", path, client, {"host": "Links.Shop.Example"})
    assert status == 200, named
    (cname,) = [r for r in named["records"] if r["purpose"] == "tracking"]
    assert (cname["type"], cname["name"], cname["value"]) == (
        "CNAME",
        "links.shop.example",
        "t.mailroom.test",
    )
    assert named["tracking_host_ready"] is False

    def tracked_html() -> str:
        body = {
            "template": "welcome",
            "from": "Shop <news@shop.example>",
            "to": ["ada@example.org"],
            "props": PROPS,
            "tracking": {"clicks": True, "opens": True},
        }
        status, accepted = stack.call("POST", "/v1/send", client, body)
        assert status == 202, accepted
        with stack.services.uow() as uow:
            message = uow.messages.get(uuid.UUID(accepted["id"]))
        assert message is not None
        rewrite = stack.services.tracking_rewriter
        assert rewrite is not None
        html = '<p><a href="https://shop.example/offer">Offer</a></p>'
        return rewrite(message, RenderedEmail(subject="Hi", html=html, text="Hi")).html

    # THEN until its CNAME is found, tracked links keep the service's host
    assert "https://t.mailroom.test/c/" in tracked_html()
    # WHEN the CNAME is published and a check finds it
    local_dns.publish("CNAME", cname["name"], cname["value"])
    status, checked = stack.call("POST", f"/v1/domains/{domain['id']}/verify", client)
    assert checked["tracking_host_ready"] is True, checked
    # THEN tracked links and the pixel of its new mail use the client's own host
    html = tracked_html()
    assert "https://links.shop.example/c/" in html
    assert "https://links.shop.example/t/" in html
    assert "t.mailroom.test" not in html
    # AND removing it gives the service's host back
    status, dropped = stack.call("DELETE", path, client)
    assert (status, dropped["tracking_host"]) == (200, None)
    assert "https://t.mailroom.test/c/" in tracked_html()


def test_a_schedule_is_held_to_sender_verification_when_made_and_when_it_runs(
    stack: Stack, local_dns: LocalDns, database: Database
) -> None:
    # GIVEN a client with one verified domain
    client = stack.client()
    domain = verified_domain(stack, local_dns, client, "shop.example")
    send = {"template": "welcome", "to": ["ada@example.org"], "props": PROPS}
    batch = {"template": "welcome", "props": PROPS, "recipients": [{"to": "ada@example.org"}]}
    every_minute = {"name": "digest", "cron": "* * * * *", "timezone": "UTC"}
    # WHEN it makes schedules sending from a domain it has not verified
    for payload in ({"send": send}, {"batch": batch}):
        status, refused = stack.call(
            "POST",
            "/v1/schedules",
            client,
            {
                **every_minute,
                **{k: {**v, "from": "news@elsewhere.example"} for k, v in payload.items()},
            },
        )
        # THEN each is refused as /v1/send would refuse it, and nothing is written
        assert (status, refused["error"]["code"]) == (422, "sender_not_verified"), refused
    assert _count(database, "schedules") == 0
    # WHEN it makes one from its verified domain THEN it is accepted
    status, made = stack.call(
        "POST",
        "/v1/schedules",
        client,
        {**every_minute, "send": {**send, "from": "news@shop.example"}},
    )
    assert status == 201, made
    # WHEN the domain is deleted and the schedule runs (in another process, as the
    # scheduler function would: this one remembers the domain verified for a minute)
    status, deleted = stack.call("DELETE", f"/v1/domains/{domain['id']}", client)
    assert status == 200, deleted
    stack.services = bootstrap(stack.settings, queue=stack.queue)
    status, run = stack.call("POST", f"/v1/schedules/{made['id']}/run", client)
    # THEN the run fails with the send's code and nothing is sent from the unverified domain
    assert status == 201, run
    assert (run["status"], run["detail"].get("code")) == ("failed", "sender_not_verified"), run
    assert _count(database, "messages") == 0
