"""Sending domains: what a client must publish in DNS before it may send as a domain.

A client registers a domain; Mailroom answers the records to publish (a DKIM
key per selector, SPF, a return-path host for bounces, a DMARC policy) and
later checks them with real DNS. A domain is ``verified`` when the records
that prove control and authenticate mail (DKIM and SPF, or SES's DKIM
CNAMEs) are found; return-path and DMARC are recommendations, reported but
not required. A verified domain whose records disappear becomes ``failing``;
a lookup that timed out changes nothing (``retry later``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from mailroom.domain.dkim import DkimAlgorithm
from mailroom.domain.errors import InvalidDomain

MAX_DOMAIN_CHARS = 253
SELECTOR_PREFIX = "mr"


class DomainStatus(StrEnum):
    PENDING = "pending"  # registered, records not (all) found yet
    VERIFIED = "verified"
    FAILING = "failing"  # was verified; a re-check found required records missing


class KeyState(StrEnum):
    ACTIVE = "active"  # signs
    NEXT = "next"  # published after a rotation; signs once its record is found
    PREVIOUS = "previous"  # replaced; stays published until retired
    RETIRED = "retired"


class RecordPurpose(StrEnum):
    DKIM = "dkim"
    SPF = "spf"
    RETURN_PATH = "return_path"
    DMARC = "dmarc"
    SES_DKIM = "ses_dkim"
    # Issue 21: the client's own tracking host, a CNAME to the tracking endpoint.
    TRACKING = "tracking"


class CheckResult(StrEnum):
    FOUND = "found"
    MISSING = "missing"
    MISMATCH = "mismatch"  # something is there, not what we asked for
    TIMEOUT = "timeout"


# The check ``make dev`` records for its demo domain, verified without DNS.
LOCALLY_VERIFIED = "local"

# What must be found for the domain to count as verified.
REQUIRED_PURPOSES = frozenset({RecordPurpose.DKIM, RecordPurpose.SPF, RecordPurpose.SES_DKIM})


@dataclass(slots=True)
class DkimKey:
    selector: str
    algorithm: DkimAlgorithm
    sealed_private_key: str = field(repr=False)
    public_record: str
    state: KeyState
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DnsRecord:
    type: str
    name: str
    value: str
    purpose: RecordPurpose
    required: bool = True
    # MX records: the priority, written before the host.
    priority: int | None = None


@dataclass(slots=True)
class SendingDomain:
    id: uuid.UUID
    client_id: uuid.UUID
    domain: str  # A-labels, lower case, no trailing dot
    status: DomainStatus = DomainStatus.PENDING
    keys: list[DkimKey] = field(default_factory=list)
    # SES domain identity (when SES carries the mail): its DKIM CNAME tokens.
    ses_dkim_tokens: list[str] = field(default_factory=list)
    # Registering created the identity (deleting the domain deletes it); False:
    # it was there already, someone else's to keep.
    ses_identity_created: bool = False
    checks: list[dict[str, Any]] = field(default_factory=list)
    last_checked_at: datetime | None = None
    verified_at: datetime | None = None
    created_at: datetime | None = None
    # Issue 21: a host under this domain (``links.example.com``) whose CNAME
    # points at the tracking endpoint; tracked links in this domain's mail use
    # it once the CNAME is found (``tracking_ready``).
    tracking_host: str | None = None

    @property
    def tracking_ready(self) -> bool:
        """Whether tracked links may use ``tracking_host``: verified, and its CNAME found."""
        return (
            self.tracking_host is not None
            and self.status is DomainStatus.VERIFIED
            and any(
                check.get("purpose") == RecordPurpose.TRACKING.value
                and check.get("name") == self.tracking_host
                and check.get("result") == CheckResult.FOUND.value
                for check in self.checks
            )
        )

    @property
    def published_keys(self) -> list[DkimKey]:
        return [key for key in self.keys if key.state is not KeyState.RETIRED]

    @property
    def receives_bounces(self) -> bool:
        """Whether mail to ``bounces.<domain>`` reaches Mailroom: verified, and its
        return-path MX found at the last check (or verified by ``make dev``)."""
        return self.status is DomainStatus.VERIFIED and any(
            check.get("purpose") in (RecordPurpose.RETURN_PATH.value, LOCALLY_VERIFIED)
            and check.get("result") == CheckResult.FOUND.value
            for check in self.checks
        )


def sealing_context(domain_id: uuid.UUID, selector: str) -> str:
    """The associated data a DKIM key is sealed under: it opens in its own row only."""
    return f"dkim:{domain_id}:{selector}"


def normalise_domain(raw: str) -> str:
    """``raw`` as lower-case IDNA A-labels, or InvalidDomain (422) saying why."""
    value = raw.strip().rstrip(".").lower()
    problem = None
    if not value or "@" in value or "/" in value or ":" in value or " " in value:
        problem = "give a domain name such as example.com (no scheme, address or path)"
    else:
        try:
            import idna  # email-validator's own dependency: IDNA 2008 with UTS 46

            value = idna.encode(value, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            problem = "not a valid internationalised domain name"
    if problem is None:
        labels = value.split(".")
        if len(labels) < 2 or len(value) > MAX_DOMAIN_CHARS:
            problem = "a domain has at least two labels and at most 253 characters"
        elif not all(_good_label(label) for label in labels) or labels[-1].isdigit():
            problem = "labels are 1-63 letters, digits or hyphens, not starting or ending with one"
    if problem is not None:
        raise InvalidDomain(problem, details=[{"field": "domain", "message": problem}])
    return value


def _good_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isalnum() or c == "-" for c in label)
        and label.isascii()
    )


def new_selector(now: datetime, existing: list[str]) -> str:
    """``mr<yyyymm>`` (a letter after it when taken): readable, sorts by age."""
    base = f"{SELECTOR_PREFIX}{now:%Y%m}"
    if base not in existing:
        return base
    for suffix in "abcdefghijklmnopqrstuvwxyz":
        if base + suffix not in existing:
            return base + suffix
    return f"{base}{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class PublishingPlan:
    """Where the non-DKIM records point: from configuration."""

    spf_include: str  # e.g. "amazonses.com" or the relay's SPF domain; "" for none
    return_path_host: str  # the inbound host bounces.<domain> points at
    dmarc_report_address: str = ""
    # The host a client's tracking host is a CNAME of (the tracking base
    # URL's); "" when tracking is not configured.
    tracking_target: str = ""


def records_for(domain: SendingDomain, plan: PublishingPlan) -> list[DnsRecord]:
    """Every record the client should publish, required ones first."""
    records: list[DnsRecord] = []
    if domain.ses_dkim_tokens:
        records += [
            DnsRecord(
                "CNAME",
                f"{token}._domainkey.{domain.domain}",
                f"{token}.dkim.amazonses.com",
                RecordPurpose.SES_DKIM,
            )
            for token in domain.ses_dkim_tokens
        ]
    else:
        records += [
            DnsRecord(
                "TXT",
                f"{key.selector}._domainkey.{domain.domain}",
                key.public_record,
                RecordPurpose.DKIM,
            )
            for key in domain.published_keys
        ]
    spf = f"v=spf1 include:{plan.spf_include} ~all" if plan.spf_include else "v=spf1 mx ~all"
    records.append(DnsRecord("TXT", domain.domain, spf, RecordPurpose.SPF))
    records.append(
        DnsRecord(
            "MX",
            f"bounces.{domain.domain}",
            plan.return_path_host,
            RecordPurpose.RETURN_PATH,
            required=False,
            priority=10,
        )
    )
    dmarc = "v=DMARC1; p=none"
    if plan.dmarc_report_address:
        dmarc += f"; rua=mailto:{plan.dmarc_report_address}"
    records.append(
        DnsRecord("TXT", f"_dmarc.{domain.domain}", dmarc, RecordPurpose.DMARC, required=False)
    )
    if domain.tracking_host and plan.tracking_target:
        records.append(
            DnsRecord(
                "CNAME",
                domain.tracking_host,
                plan.tracking_target,
                RecordPurpose.TRACKING,
                required=False,
            )
        )
    return records


def tracking_host_of(domain: SendingDomain, raw: str) -> str:
    """``raw`` as a tracking host under ``domain`` (A-labels), or InvalidDomain (422).

    A proper subdomain: DNS allows no CNAME at a zone's apex, where the
    domain's MX and TXT records live.
    """
    host = normalise_domain(raw)
    if not host.endswith("." + domain.domain):
        problem = (
            f"the tracking host must be a name under {domain.domain}, e.g. links.{domain.domain}"
        )
        raise InvalidDomain(problem, details=[{"field": "host", "message": problem}])
    return host


def record_matches(record: DnsRecord, answers: list[str]) -> bool:
    """Whether what DNS answered for ``record``'s name holds what we asked for.

    TXT: a DKIM record matches on its ``p=`` key (tags may be reordered), SPF
    on ``include:`` being present in some ``v=spf1`` record, DMARC on any
    ``v=DMARC1``. MX and CNAME: the host, case and trailing dot aside.
    """
    if record.purpose is RecordPurpose.DKIM:
        wanted = _tag(record.value, "p")
        return any(_tag(answer, "p") == wanted for answer in answers)
    if record.purpose is RecordPurpose.SPF:
        spf = [a for a in answers if a.lower().startswith("v=spf1")]
        include = next((t for t in record.value.split() if t.startswith("include:")), None)
        return bool(spf) and (include is None or any(include in a.split() for a in spf))
    if record.purpose is RecordPurpose.DMARC:
        return any(a.replace(" ", "").upper().startswith("V=DMARC1") for a in answers)
    want = record.value.rstrip(".").lower()
    return any(a.rstrip(".").lower().split()[-1] == want for a in answers if a.strip())


def _tag(value: str, name: str) -> str | None:
    for part in value.split(";"):
        key, sep, tag_value = part.partition("=")
        if sep and key.strip() == name:
            return "".join(tag_value.split())
    return None


def status_after_check(
    previous: DomainStatus, results: dict[RecordPurpose, CheckResult]
) -> DomainStatus:
    """The domain's status once the required records were looked up.

    A timeout anywhere keeps the previous status: DNS being slow says
    nothing about what is published.
    """
    required = {p: r for p, r in results.items() if p in REQUIRED_PURPOSES}
    if any(result is CheckResult.TIMEOUT for result in required.values()):
        return previous
    if required and all(result is CheckResult.FOUND for result in required.values()):
        return DomainStatus.VERIFIED
    if previous in (DomainStatus.VERIFIED, DomainStatus.FAILING):
        return DomainStatus.FAILING
    return DomainStatus.PENDING


def from_domain(address: str) -> str | None:
    """The A-label domain of a From value (``Name <a@b>`` or ``a@b``), or None."""
    value = address.strip()
    if "<" in value:
        value = value[value.rfind("<") + 1 :].split(">", 1)[0]
    _local, at, domain = value.rpartition("@")
    if not at or not domain:
        return None
    try:
        return normalise_domain(domain)
    except InvalidDomain:
        return None
