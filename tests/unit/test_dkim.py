"""DKIM signatures checked by dkimpy, an independent verifier, and the domain rules of issue 16."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import dkim as dkimpy
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from mailroom.adapters.dns_records import parse_nameservers
from mailroom.adapters.providers.dkim_signing import DkimKeyCache, from_header_domain, sign_email
from mailroom.domain import dkim
from mailroom.domain.errors import InvalidDomain
from mailroom.domain.mime import build_mime, build_mime_stdlib
from mailroom.domain.model import Message, RenderedEmail
from mailroom.domain.sending_domains import (
    CheckResult,
    DnsRecord,
    DomainStatus,
    RecordPurpose,
    normalise_domain,
    record_matches,
    status_after_check,
)

RENDERED = RenderedEmail(
    subject="Your receipt",
    html="<p>Thanks for your order.</p>\n",
    text="Thanks for your order.\n",
)


class Keys:
    """A domain's RSA and Ed25519 keys and the TXT records dkimpy is served."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.records: dict[bytes, bytes] = {}
        self.signing: list[dkim.SigningKey] = []

    def add(self, selector: str, algorithm: dkim.DkimAlgorithm) -> dkim.SigningKey:
        pem = dkim.generate_private_key(algorithm)
        name = f"{selector}._domainkey.{self.domain}.".encode()
        self.records[name] = dkim.public_record(pem, algorithm).encode()
        key = dkim.SigningKey(self.domain, selector, algorithm, dkim.load_private_key(pem))
        self.signing.append(key)
        return key

    def dns(self, name: bytes, timeout: int = 5) -> bytes | None:
        return self.records.get(name)


def _message(**fields: object) -> Message:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "client_id": uuid.uuid4(),
        "trace_id": "t",
        "template_name": "receipt",
        "from_address": "Shop <shop@shop.example>",
        "to": ["ada@example.org"],
        "created_at": datetime(2026, 12, 6, 10, 0, tzinfo=UTC),
    }
    values.update(fields)
    return Message(**values)  # type: ignore[arg-type]


def _verified(message: bytes, keys: Keys, index: int = 0) -> bool:
    return bool(dkimpy.DKIM(message).verify(idx=index, dnsfunc=keys.dns))


def test_an_ascii_message_verifies_with_rsa_and_ed25519_and_fails_once_tampered() -> None:
    # GIVEN an RSA-2048 and an Ed25519 key for the From domain
    keys = Keys("shop.example")
    keys.add("mr202612", dkim.DkimAlgorithm.RSA_SHA256)
    keys.add("mr202612e", dkim.DkimAlgorithm.ED25519_SHA256)
    email = build_mime(_message(cc=["bob@example.org"], reply_to=["help@shop.example"]), RENDERED)
    # WHEN the message is signed with both
    signed = dkim.sign(email.mime, keys.signing)
    # THEN dkimpy verifies each signature against the published records
    assert _verified(signed, keys, 0)
    assert _verified(signed, keys, 1)
    header = signed.split(b"\r\n\r\n")[0]
    assert b"h=from:to:cc:reply-to:subject:date:message-id:mime-version:content-type" in header
    # AND a changed body or a changed subject breaks them
    assert not dkimpy.verify(signed.replace(b"Thanks", b"Thank"), dnsfunc=keys.dns)
    assert not dkimpy.verify(signed.replace(b"Your receipt", b"Your invoice"), dnsfunc=keys.dns)


def test_list_unsubscribe_headers_are_covered_when_present() -> None:
    # GIVEN a bulk message carrying the one-click headers (issue 16 item 4 adds them)
    keys = Keys("shop.example")
    keys.add("s1", dkim.DkimAlgorithm.RSA_SHA256)
    mime = build_mime(_message(), RENDERED).mime
    bulk = (
        b"List-Unsubscribe: <https://mail.example/u/abc>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" + mime
    )
    # WHEN it is signed
    signed = dkim.sign(bulk, keys.signing)
    # THEN both headers are in h= and a changed unsubscribe link fails verification
    assert b"list-unsubscribe:list-unsubscribe-post" in signed.split(b"\r\n\r\n")[0]
    assert dkimpy.verify(signed, dnsfunc=keys.dns)
    assert not dkimpy.verify(signed.replace(b"/u/abc", b"/u/abd"), dnsfunc=keys.dns)


def test_an_internationalised_message_verifies_in_both_forms() -> None:
    # GIVEN a message from an IDN domain to a UTF-8 address, with a UTF-8 subject
    keys = Keys("xn--bcher-kva.example")
    keys.add("mr202612", dkim.DkimAlgorithm.RSA_SHA256)
    keys.add("mr202612e", dkim.DkimAlgorithm.ED25519_SHA256)
    message = _message(from_address="Bücher <laden@bücher.example>", to=["José <josé@example.org>"])
    email = build_mime_stdlib(
        message, RenderedEmail(subject="Grüße aus Köln", html="<p>Grüße</p>", text="Grüße\n")
    )
    assert email.mime_utf8 is not None
    # WHEN each form is signed (the SMTPUTF8 form carries UTF-8 headers, RFC 6532)
    for form in (email.mime, email.mime_utf8):
        signed = dkim.sign(form, keys.signing)
        # THEN dkimpy verifies both signatures, d= being the A-label domain
        assert _verified(signed, keys, 0), form[:300]
        assert _verified(signed, keys, 1), form[:300]
        assert not dkimpy.verify(signed.replace("Grüße".encode(), b"Gruss"), dnsfunc=keys.dns)
    # AND the signer finds the From domain in either form, as A-labels
    assert from_header_domain(email.mime_utf8) == "xn--bcher-kva.example"
    assert from_header_domain(email.mime) == "xn--bcher-kva.example"


def test_relaxed_canonicalisation_survives_refolding_and_trailing_spaces() -> None:
    # GIVEN a signed message
    keys = Keys("shop.example")
    keys.add("s1", dkim.DkimAlgorithm.RSA_SHA256)
    signed = dkim.sign(build_mime(_message(), RENDERED).mime, keys.signing)
    # WHEN a relay re-folds the subject and pads a body line with spaces
    relayed = signed.replace(b"Subject: Your receipt", b"Subject: Your\r\n  receipt").replace(
        b"Thanks for your order.\r\n", b"Thanks for your order.   \r\n", 1
    )
    # THEN the signature still verifies
    assert dkimpy.verify(relayed, dnsfunc=keys.dns)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        (" mail.shop.example ", "mail.shop.example"),
    ],
)
def test_domains_are_stored_as_lower_case_a_labels(raw: str, expected: str) -> None:
    assert normalise_domain(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "localhost",
        "user@example.com",
        "https://example.com",
        "exa mple.com",
        "-bad.example",
        "a" * 64 + ".example",
        "example.123",
        "exam_ple.com",
        "x" * 250 + ".com",
    ],
)
def test_what_is_not_a_domain_is_refused_with_its_reason(raw: str) -> None:
    with pytest.raises(InvalidDomain) as refused:
        normalise_domain(raw)
    assert refused.value.code == "invalid_domain"
    assert refused.value.details[0]["field"] == "domain"


def test_records_match_on_what_matters() -> None:
    dkim_record = DnsRecord(
        "TXT", "s._domainkey.a.example", "v=DKIM1; k=rsa; p=ABC", RecordPurpose.DKIM
    )
    assert record_matches(dkim_record, ["k=rsa; v=DKIM1; p=AB C"])
    assert not record_matches(dkim_record, ["v=DKIM1; k=rsa; p=XYZ"])
    spf = DnsRecord("TXT", "a.example", "v=spf1 include:amazonses.com ~all", RecordPurpose.SPF)
    assert record_matches(spf, ["v=spf1 include:_spf.google.com include:amazonses.com -all"])
    assert not record_matches(spf, ["v=spf1 include:_spf.google.com -all", "amazonses.com"])
    mx = DnsRecord("MX", "bounces.a.example", "inbound.example", RecordPurpose.RETURN_PATH)
    assert record_matches(mx, ["10 Inbound.Example."])


def test_a_timeout_never_changes_the_status_and_missing_records_fail_a_verified_domain() -> None:
    found = {RecordPurpose.DKIM: CheckResult.FOUND, RecordPurpose.SPF: CheckResult.FOUND}
    assert status_after_check(DomainStatus.PENDING, found) is DomainStatus.VERIFIED
    timeout = {**found, RecordPurpose.SPF: CheckResult.TIMEOUT}
    assert status_after_check(DomainStatus.PENDING, timeout) is DomainStatus.PENDING
    assert status_after_check(DomainStatus.VERIFIED, timeout) is DomainStatus.VERIFIED
    missing = {**found, RecordPurpose.DKIM: CheckResult.MISSING}
    assert status_after_check(DomainStatus.VERIFIED, missing) is DomainStatus.FAILING
    assert status_after_check(DomainStatus.PENDING, missing) is DomainStatus.PENDING
    # DMARC and the return path are recommendations: their absence fails nothing
    optional = {**found, RecordPurpose.DMARC: CheckResult.MISSING}
    assert status_after_check(DomainStatus.VERIFIED, optional) is DomainStatus.VERIFIED


def test_resolver_addresses_parse_with_and_without_ports() -> None:
    assert parse_nameservers("127.0.0.1:5353, [::1]:5354, 10.0.0.2") == [
        ("127.0.0.1", 5353),
        ("::1", 5354),
        ("10.0.0.2", 53),
    ]
    assert parse_nameservers("") == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(["a", "b", " ", "\t", "é"]), max_size=12), max_size=8
    ),
)
def test_relaxed_body_canonicalisation_matches_dkimpys(lines: list[str]) -> None:
    # GIVEN any body of short lines mixing spaces, tabs, text and blank lines, ending
    # in CRLF as both MIME builders end it (dkimpy reads an unterminated last line
    # differently from RFC 6376, which does not arise here)
    body = "".join(line + "\r\n" for line in lines).encode()
    # THEN our relaxed form is dkimpy's (an independent implementation of RFC 6376 3.4.4)
    assert dkim.relaxed_body(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["Subject", "X-Tag ", "list-unsubscribe"]),
    st.lists(
        st.text(alphabet=st.sampled_from(["a", "B", " ", "\t", ":"]), max_size=10), max_size=4
    ),
)
def test_relaxed_header_canonicalisation_matches_dkimpys(name: str, parts: list[str]) -> None:
    # GIVEN a header field whose value mixes spaces, tabs and text, folded
    # between its parts (each fold a CRLF and then WSP, as on the wire)
    value = "\r\n\t".join(parts)
    field = f"{name}:{value}".encode()
    # THEN our relaxed form is dkimpy's (RFC 6376 3.4.2: lower-case name, unfolded,
    # WSP runs as one space, none around the colon or at the end)
    ((expected_name, expected_value),) = Relaxed.canonicalize_headers(
        [[name.encode(), value.encode()]]
    )
    assert dkim.relaxed_header(field) == expected_name + b":" + expected_value


class _FixedKeys(DkimKeyCache):
    """The key cache's interface over keys given here (no database)."""

    def __init__(self, keys: list[dkim.SigningKey]) -> None:
        self._given = keys

    def keys_for(self, domain: str, client_id: uuid.UUID | None) -> list[dkim.SigningKey]:
        return self._given


def test_when_both_forms_are_the_same_bytes_they_are_signed_once() -> None:
    # GIVEN a message to a non-ASCII local part: its ASCII form cannot exist,
    # so both forms are the same RFC 6532 bytes
    keys = Keys("xn--bcher-kva.example")
    keys.add("mr202612", dkim.DkimAlgorithm.RSA_SHA256)
    message = _message(from_address="Bücher <laden@bücher.example>", to=["josé@example.org"])
    email = build_mime_stdlib(message, RenderedEmail(subject="Hallo", html="<p>x</p>", text="x\n"))
    assert email.requires_smtputf8
    assert email.mime_utf8 == email.mime
    # WHEN the signer signs it
    signed = sign_email(email, _FixedKeys(keys.signing))
    # THEN one signature serves both forms (the same object: no second RSA operation)
    assert signed.mime_utf8 is signed.mime
    assert _verified(signed.mime, keys)
    # AND a message whose forms differ still gets each its own signature
    other = build_mime_stdlib(
        _message(from_address="Bücher <laden@bücher.example>", to=["jose@example.org"]),
        RenderedEmail(subject="Hallo", html="<p>x</p>", text="x\n"),
    )
    assert other.mime_utf8 is not None
    assert other.mime_utf8 != other.mime
    both = sign_email(other, _FixedKeys(keys.signing))
    assert both.mime_utf8 is not None
    assert _verified(both.mime, keys)
    assert _verified(both.mime_utf8, keys)
