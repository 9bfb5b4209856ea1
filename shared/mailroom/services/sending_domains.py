"""Sending domains: registering, verifying with DNS, rotating DKIM keys, the sender check.

Every change is audited in its transaction (``domain.*`` actions, target the
domain's id). A re-check that finds a verified domain's records gone sets it
``failing`` and appends a ``domain.failing`` audit row with what was
missing: that row is how its owner (and the operator) learn of it
(``GET /v1/domains/{id}`` shows the same checks).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.dns_records import DnsLookup, LookupOutcome
from mailroom.adapters.ses_identities import SesIdentities
from mailroom.domain import dkim
from mailroom.domain.errors import (
    DomainNotFound,
    DomainTaken,
    InvalidRequest,
    SecretsNotConfigured,
    SenderNotVerified,
)
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.domain.sending_domains import (
    LOCALLY_VERIFIED,
    CheckResult,
    DkimKey,
    DnsRecord,
    DomainStatus,
    KeyState,
    PublishingPlan,
    RecordPurpose,
    SendingDomain,
    from_domain,
    new_selector,
    normalise_domain,
    record_matches,
    records_for,
    sealing_context,
    status_after_check,
    tracking_host_of,
)
from mailroom.domain.tenancy import Actor, AuditEntry

CHECKER = Actor("system:domain-check")
# Values of a record kept in the check results: enough to see what is there.
_FOUND_KEPT = 5


@dataclass(frozen=True, slots=True)
class DomainPolicy:
    """What registration and checks need from configuration."""

    plan: PublishingPlan
    keyring: SecretKeyring | None
    ed25519: bool = False
    # SES creates the identity and its DKIM keys: ours are not made.
    ses: SesIdentities | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    domain: SendingDomain
    # A lookup timed out: the status was left as it was; try again later.
    retry_later: bool


def register_domain(
    uow: UnitOfWork,
    policy: DomainPolicy,
    client_id: uuid.UUID,
    raw_domain: str,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> SendingDomain:
    """A new pending domain with its DKIM key(s), or SES identity; 409 if registered already."""
    name = normalise_domain(raw_domain)
    moment = now or datetime.now(UTC)
    with uow:
        if uow.clients.get(client_id) is None:
            raise DomainNotFound("no such client")
        _refuse_taken(uow.sending_domains.by_name(name), client_id)
    domain = SendingDomain(id=uuid.uuid4(), client_id=client_id, domain=name)
    if policy.ses is not None:
        identity = policy.ses.create_identity(name)
        domain.ses_dkim_tokens = identity.tokens
        domain.ses_identity_created = identity.created
    else:
        domain.keys = _new_keys(policy, domain, moment, state=KeyState.ACTIVE)
    with uow:
        uow.sending_domains.add(domain)  # DomainTaken if raced
        uow.audit.append(_audit(actor, "domain.create", domain, None, _summary(domain)))
        uow.commit()
    return domain


def _refuse_taken(existing: SendingDomain | None, client_id: uuid.UUID) -> None:
    if existing is None:
        return
    if existing.client_id == client_id:
        message = f"{existing.domain} is registered already (id {existing.id})"
    else:
        message = f"{existing.domain} is registered by another client"
    raise DomainTaken(message, details=[{"field": "domain", "message": message}])


def _new_keys(
    policy: DomainPolicy, domain: SendingDomain, now: datetime, *, state: KeyState
) -> list[DkimKey]:
    keyring = policy.keyring
    if keyring is None:
        raise SecretsNotConfigured(
            "DKIM keys are stored sealed, and SECRETS_ENCRYPTION_KEYS is not configured"
        )
    taken = [key.selector for key in domain.keys]
    selector = new_selector(now, taken)
    algorithms = [dkim.DkimAlgorithm.RSA_SHA256]
    if policy.ed25519:
        algorithms.append(dkim.DkimAlgorithm.ED25519_SHA256)
    keys = []
    for algorithm in algorithms:
        # Ed25519 needs a selector of its own: one DNS name holds one key.
        name = selector if algorithm is dkim.DkimAlgorithm.RSA_SHA256 else f"{selector}e"
        pem = dkim.generate_private_key(algorithm)
        keys.append(
            DkimKey(
                selector=name,
                algorithm=algorithm,
                sealed_private_key=keyring.seal(pem, context=sealing_context(domain.id, name)),
                public_record=dkim.public_record(pem, algorithm),
                state=state,
            )
        )
    return keys


def list_domains(uow: UnitOfWork, client_id: uuid.UUID) -> list[SendingDomain]:
    with uow:
        return uow.sending_domains.list_for(client_id)


def get_domain(uow: UnitOfWork, client_id: uuid.UUID | None, domain_id: uuid.UUID) -> SendingDomain:
    with uow:
        domain = uow.sending_domains.get(domain_id, client_id)
    if domain is None:
        raise DomainNotFound("no such domain for this client")
    return domain


def delete_domain(
    uow: UnitOfWork,
    client_id: uuid.UUID | None,
    domain_id: uuid.UUID,
    *,
    actor: Actor,
    ses: SesIdentities | None = None,
) -> SendingDomain:
    """Remove the domain and its keys; with ``ses``, the SES identity registering created.

    SES goes first: if it is unreachable the answer is 503 and the domain
    stays, so the call can be repeated; an identity already gone is no error.
    An identity that existed before registration is not ours to delete.
    """
    if ses is not None:
        with uow:
            found = uow.sending_domains.get(domain_id, client_id)
        if found is None:
            raise DomainNotFound("no such domain for this client")
        if found.ses_identity_created:
            ses.delete_identity(found.domain)
    with uow:
        domain = uow.sending_domains.get(domain_id, client_id)
        if domain is None:
            raise DomainNotFound("no such domain for this client")
        uow.sending_domains.remove(domain.id)
        uow.audit.append(_audit(actor, "domain.delete", domain, _summary(domain), None))
        uow.commit()
    return domain


def verify_domain(
    uow: UnitOfWork,
    dns: DnsLookup,
    plan: PublishingPlan,
    client_id: uuid.UUID | None,
    domain_id: uuid.UUID,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> Verification:
    """Look every record up, store what was found, move the status.

    DNS is asked outside any transaction (it may take seconds); the row is
    then locked and written. A next key found in DNS becomes the active one
    and the key it replaces stays published as ``previous``.
    """
    moment = now or datetime.now(UTC)
    found_domain = get_domain(uow, client_id, domain_id)
    records = records_for(found_domain, plan)
    results = [(record, _check(dns, record)) for record in records]
    with uow:
        domain = uow.sending_domains.get(domain_id, client_id)
        if domain is None:
            raise DomainNotFound("no such domain for this client")
        before = _summary(domain)
        by_selector = {
            record.name.split("._domainkey.")[0]: result
            for record, (result, _) in results
            if record.purpose is RecordPurpose.DKIM
        }
        _promote_found_keys(domain, by_selector)
        domain.checks = [
            {
                "type": record.type,
                "name": record.name,
                "purpose": record.purpose.value,
                "required": record.required,
                "result": result.value,
                "found": list(values[:_FOUND_KEPT]),
            }
            for record, (result, values) in results
        ]
        purposes = _by_purpose(domain, results, by_selector)
        previous = domain.status
        domain.status = status_after_check(previous, purposes)
        domain.last_checked_at = moment
        if domain.status is DomainStatus.VERIFIED and previous is not DomainStatus.VERIFIED:
            domain.verified_at = moment
        uow.sending_domains.save(domain)
        # Every check someone asked for is audited; the scheduled re-check
        # only when the status moved (a row per domain per day otherwise).
        if domain.status is not previous or actor != CHECKER:
            action = {
                DomainStatus.VERIFIED: "domain.verified",
                DomainStatus.FAILING: "domain.failing",
                DomainStatus.PENDING: "domain.pending",
            }[domain.status]
            if domain.status is previous:
                action = "domain.check"
            after = {**_summary(domain), "checks": domain.checks}
            uow.audit.append(_audit(actor, action, domain, before, after))
        uow.commit()
    retry = any(result is CheckResult.TIMEOUT for _, (result, _) in results)
    return Verification(domain, retry_later=retry)


def _check(dns: DnsLookup, record: DnsRecord) -> tuple[CheckResult, tuple[str, ...]]:
    lookup = dns.lookup(record.name, record.type)
    if lookup.outcome is LookupOutcome.NO_RECORD and record.purpose is RecordPurpose.RETURN_PATH:
        # The return path may be a CNAME to the inbound host instead of an MX.
        lookup = dns.lookup(record.name, "CNAME")
    if lookup.outcome is LookupOutcome.TIMEOUT:
        return CheckResult.TIMEOUT, ()
    if lookup.outcome is LookupOutcome.NO_RECORD:
        return CheckResult.MISSING, ()
    matched = record_matches(record, list(lookup.values))
    return (CheckResult.FOUND if matched else CheckResult.MISMATCH), lookup.values


def _promote_found_keys(domain: SendingDomain, by_selector: dict[str, CheckResult]) -> None:
    for key in domain.keys:
        if key.state is KeyState.NEXT and by_selector.get(key.selector) is CheckResult.FOUND:
            for old in domain.keys:
                if old.state is KeyState.ACTIVE and old.algorithm is key.algorithm:
                    old.state = KeyState.PREVIOUS
            key.state = KeyState.ACTIVE


def _by_purpose(
    domain: SendingDomain,
    results: list[tuple[DnsRecord, tuple[CheckResult, tuple[str, ...]]]],
    by_selector: dict[str, CheckResult],
) -> dict[RecordPurpose, CheckResult]:
    """One result per purpose; for DKIM, the signing (active) keys' records decide."""
    purposes: dict[RecordPurpose, CheckResult] = {}
    for record, (result, _) in results:
        if record.purpose is RecordPurpose.DKIM:
            continue
        current = purposes.get(record.purpose)
        purposes[record.purpose] = result if current in (None, CheckResult.FOUND) else current
    active = [by_selector.get(key.selector) for key in domain.keys if key.state is KeyState.ACTIVE]
    if active:
        if any(result is CheckResult.TIMEOUT for result in active):
            purposes[RecordPurpose.DKIM] = CheckResult.TIMEOUT
        elif all(result is CheckResult.FOUND for result in active):
            purposes[RecordPurpose.DKIM] = CheckResult.FOUND
        else:
            purposes[RecordPurpose.DKIM] = CheckResult.MISSING
    return purposes


def rotate_dkim(
    uow: UnitOfWork,
    policy: DomainPolicy,
    client_id: uuid.UUID | None,
    domain_id: uuid.UUID,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> SendingDomain:
    """New key(s) under a new selector, state ``next``: published, signing once found in DNS.

    The active key signs until then, and stays published (``previous``)
    after, until ``retire_previous_keys``. A next key not yet found is
    replaced by this one.
    """
    moment = now or datetime.now(UTC)
    with uow:
        domain = uow.sending_domains.get(domain_id, client_id)
        if domain is None:
            raise DomainNotFound("no such domain for this client")
        if domain.ses_dkim_tokens:
            raise InvalidRequest(
                "SES holds this domain's DKIM keys and rotates them itself",
                details=[{"field": "domain", "message": "SES-managed DKIM"}],
            )
        before = _summary(domain)
        for key in domain.keys:
            if key.state is KeyState.NEXT:
                key.state = KeyState.RETIRED
        domain.keys += _new_keys(policy, domain, moment, state=KeyState.NEXT)
        uow.sending_domains.save(domain)
        uow.audit.append(_audit(actor, "domain.rotate_dkim", domain, before, _summary(domain)))
        uow.commit()
    return domain


def retire_previous_keys(
    uow: UnitOfWork, client_id: uuid.UUID | None, domain_id: uuid.UUID, *, actor: Actor
) -> SendingDomain:
    """Keys replaced by a rotation stop being published (their records may be removed)."""
    with uow:
        domain = uow.sending_domains.get(domain_id, client_id)
        if domain is None:
            raise DomainNotFound("no such domain for this client")
        before = _summary(domain)
        for key in domain.keys:
            if key.state is KeyState.PREVIOUS:
                key.state = KeyState.RETIRED
        uow.sending_domains.save(domain)
        uow.audit.append(_audit(actor, "domain.retire_dkim", domain, before, _summary(domain)))
        uow.commit()
    return domain


def mark_verified_locally(
    uow: UnitOfWork, domain_id: uuid.UUID, *, actor: Actor, now: datetime | None = None
) -> None:
    """The local runner's demo domain: verified without DNS (example domains have none)."""
    moment = now or datetime.now(UTC)
    with uow:
        domain = uow.sending_domains.get(domain_id)
        if domain is None or domain.status is DomainStatus.VERIFIED:
            return
        domain.status = DomainStatus.VERIFIED
        domain.verified_at = domain.last_checked_at = moment
        domain.checks = [
            {"result": "found", "purpose": LOCALLY_VERIFIED, "note": "verified by make dev"}
        ]
        uow.sending_domains.save(domain)
        uow.audit.append(_audit(actor, "domain.verified", domain, None, _summary(domain)))
        uow.commit()


def recheck_due(
    uow: UnitOfWork,
    dns: DnsLookup,
    plan: PublishingPlan,
    *,
    interval_seconds: int,
    batch_size: int,
    now: datetime | None = None,
) -> list[Verification]:
    """Re-verify the domains checked longest ago (the scheduled ``domain_checks`` tick)."""
    moment = now or datetime.now(UTC)
    cutoff = datetime.fromtimestamp(moment.timestamp() - interval_seconds, UTC)
    with uow:
        due = uow.sending_domains.due_for_check(cutoff, batch_size)
    outcomes = []
    for domain_id in due:
        try:
            outcomes.append(
                verify_domain(uow, dns, plan, None, domain_id, actor=CHECKER, now=moment)
            )
        except DomainNotFound:
            continue  # deleted meanwhile
    return outcomes


def _summary(domain: SendingDomain) -> dict[str, Any]:
    return {
        "domain": domain.domain,
        "client_id": str(domain.client_id),
        "status": domain.status.value,
        "selectors": {key.selector: key.state.value for key in domain.keys},
        "tracking_host": domain.tracking_host,
    }


def set_tracking_host(
    uow: UnitOfWork,
    client_id: uuid.UUID | None,
    domain_id: uuid.UUID,
    host: str | None,
    *,
    actor: Actor,
) -> SendingDomain:
    """Name (or, with None, drop) the domain's tracking host; it is used once its CNAME is found.

    The next check (``verify_domain``, or the scheduled re-check) looks the
    CNAME up; until then tracked links keep the service's own host.
    """
    with uow:
        domain = uow.sending_domains.get(domain_id, client_id)
        if domain is None:
            raise DomainNotFound("no such domain for this client")
        before = _summary(domain)
        domain.tracking_host = None if host is None else tracking_host_of(domain, host)
        # A new host has not been seen in DNS: its old check must not count.
        domain.checks = [c for c in domain.checks if c.get("purpose") != RecordPurpose.TRACKING]
        uow.sending_domains.save(domain)
        uow.audit.append(_audit(actor, "domain.tracking_host", domain, before, _summary(domain)))
        uow.commit()
    return domain


def _audit(
    actor: Actor,
    action: str,
    domain: SendingDomain,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> AuditEntry:
    return actor.entry(action, ("sending_domain", str(domain.id)), before, after)


class VerifiedSenders:
    """The send-time check: the From domain is one of the client's verified domains.

    A positive answer is remembered in process for ``ttl_seconds``, so a
    client sending steadily pays one query per TTL, not per message; a
    refusal is never cached (the client may be verifying right now).
    """

    def __init__(self, ttl_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl_seconds
        self._clock = clock
        self._verified: dict[tuple[uuid.UUID, str], float] = {}
        self._lock = threading.Lock()

    def require(self, uow: UnitOfWork, client_id: uuid.UUID, from_address: str) -> None:
        name = from_domain(from_address)
        if name is None:
            return  # the send validator refuses such an address before this
        key = (client_id, name)
        now = self._clock()
        with self._lock:
            until = self._verified.get(key)
        if until is not None and until > now:
            return
        with uow:
            verified = uow.sending_domains.is_verified_sender(client_id, name)
        if not verified:
            message = (
                f"{name} is not a verified sending domain of this client: register it "
                "(POST /v1/domains), publish its records and verify it"
            )
            raise SenderNotVerified(message, details=[{"field": "from", "message": message}])
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[key] = now + self._ttl


class DomainFacts:
    """What the worker asks of a message's From domain, one query per domain per TTL.

    ``receives_for``: may the return path be on the From domain? Yes only
    when it is one of the sending client's verified domains and its
    ``bounces.<domain>`` MX was found (``receives_bounces``): bounce mail
    there reaches us; otherwise the return path is on the platform's
    ``BOUNCE_DOMAIN`` (``SenderPolicy``, issue 16).

    ``tracking_base_url_for``: ``https://<tracking host>`` when the From
    domain is one of the sending client's verified domains and its tracking
    host's CNAME was found at the last check; otherwise None, the service's
    ``TRACKING_BASE_URL`` (issue 21).

    Each domain is read once per ``ttl_seconds`` and process, as the DKIM
    keys are, and both answers come from that one read.
    """

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        *,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        self._ttl = ttl_seconds
        self._clock = clock
        self._facts: dict[str, _DomainFact] = {}
        self._lock = threading.Lock()

    def receives_for(self, client_id: uuid.UUID, domain: str) -> bool:
        fact = self._fact(domain)
        return fact.owner == client_id and fact.receives_bounces

    def tracking_base_url_for(self, client_id: uuid.UUID, from_address: str) -> str | None:
        domain = from_domain(from_address)
        if domain is None:
            return None
        fact = self._fact(domain)
        if fact.tracking_host is None or fact.owner != client_id:
            return None
        return f"https://{fact.tracking_host}"

    def _fact(self, domain: str) -> _DomainFact:
        now = self._clock()
        with self._lock:
            cached = self._facts.get(domain)
        if cached is not None and cached.until > now:
            return cached
        with self._uow() as uow:
            found = uow.sending_domains.by_name(domain)
        fact = (
            _DomainFact(now + self._ttl, None, False, None)
            if found is None
            else _DomainFact(
                now + self._ttl,
                found.client_id,
                found.receives_bounces,
                found.tracking_host if found.tracking_ready else None,
            )
        )
        with self._lock:
            if len(self._facts) > 10_000:
                self._facts.clear()
            self._facts[domain] = fact
        return fact


@dataclass(frozen=True, slots=True)
class _DomainFact:
    until: float
    owner: uuid.UUID | None
    receives_bounces: bool
    # The tracking host, only once its CNAME was found (``tracking_ready``).
    tracking_host: str | None
