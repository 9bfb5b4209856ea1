"""Real bounce and complaint mail (tests/fixtures/bounces/README.md) read by domain/bounces.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mailroom.domain.bounces import BounceKind, ReportFormat, parse_bounce
from mailroom.domain.return_path import (
    SigningKeyring,
    match_return_path,
    unsubscribe_token,
    verify_unsubscribe_token,
    verp_return_path,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bounces"

# file, the format that read it, the recipient it names, and its class.
SAMPLES = [
    ("flufl-dsn_10.eml", ReportFormat.DSN, "anne.person@dom.ain", BounceKind.HARD),  # Postfix DSN
    ("flufl-dsn_11.eml", ReportFormat.DSN, "joem@example.com", BounceKind.HARD),  # sendmail 5.1.1
    ("flufl-dsn_02.eml", ReportFormat.DSN, "zzzzz@example.uk", BounceKind.SOFT),  # 4.4.7
    ("flufl-dsn_01.eml", ReportFormat.DSN, "userx@sims-ms-daemon", BounceKind.SOFT),  # disk quota
    ("flufl-dsn_05.eml", ReportFormat.DSN, "userx@example.cz", BounceKind.DELAYED),
    ("flufl-postfix_01.eml", ReportFormat.FLUFL, "xxxxx@local.ie", BounceKind.HARD),
    (
        "flufl-exim_01.eml",
        ReportFormat.X_FAILED_RECIPIENTS,
        "userx@its.example.nl",
        BounceKind.HARD,
    ),
    ("flufl-microsoft_01.eml", ReportFormat.FLUFL, "userx@example.com", BounceKind.HARD),
    ("flufl-simple_17.eml", ReportFormat.FLUFL, "userx@example.com", BounceKind.HARD),  # Gmail
    ("flufl-yahoo_01.eml", ReportFormat.FLUFL, "userx@example.com", BounceKind.HARD),
    (
        "sisimai-us-google-02.eml",
        ReportFormat.X_FAILED_RECIPIENTS,
        "aougoueioaldljgoiuiorghladkgke@example.fr",
        BounceKind.HARD,
    ),
    (
        "sisimai-arf-02.eml",
        ReportFormat.ARF,
        "this-local-part-does-not-exist-on-yahoo@yahoo.com",
        BounceKind.COMPLAINT,
    ),
    (  # Microsoft JMRP (Outlook.com/Hotmail) complaint
        "sisimai-set-of-emails-arf-22.eml",
        ReportFormat.JMRP,
        "kijitora@example.com",
        BounceKind.COMPLAINT,
    ),
]


@pytest.mark.parametrize(("name", "report_format", "recipient", "kind"), SAMPLES)
def test_each_real_sample_parses_to_its_recipient_and_class(
    name: str, report_format: ReportFormat, recipient: str, kind: BounceKind
) -> None:
    # GIVEN a bounce captured from a real mail system
    raw = (FIXTURES / name).read_bytes()
    # WHEN it is parsed
    report = parse_bounce(raw)
    # THEN the reader, the recipient and the class are the expected ones
    assert report.format is report_format
    assert [r.address for r in report.recipients] == [recipient]
    assert report.kind is kind


def test_dsn_fields_are_read_per_recipient() -> None:
    report = parse_bounce((FIXTURES / "flufl-dsn_02.eml").read_bytes())
    (recipient,) = report.recipients
    assert recipient.status == "4.4.7"
    assert recipient.action == "failed"
    # The x400 Final-Recipient is unusable: the Original-Recipient is used.
    assert recipient.address == "zzzzz@example.uk"


def test_dsn_original_recipient_is_kept_when_a_forwarder_rewrote_it() -> None:
    report = parse_bounce((FIXTURES / "flufl-dsn_01.eml").read_bytes())
    assert report.recipients[0].original_address == "userx@example.com"


@pytest.mark.parametrize(
    "name",
    [
        # Zimbra vacation reply received through SES inbound: RFC 3834
        # Auto-Submitted: auto-replied (zimbra; vacation), Precedence: bulk.
        "sisimai-rfc3834-06.eml",
        # Exchange "Out of Office:" reply with no RFC 3834 header at all: the
        # subject alone says it, and Return-Path <> must not make it a bounce.
        "sisimai-rfc3834-01.eml",
    ],
)
def test_a_real_vacation_reply_is_an_auto_reply_not_a_bounce(name: str) -> None:
    # GIVEN a vacation reply captured from a real mailbox
    raw = (FIXTURES / name).read_bytes()
    # WHEN it is parsed
    report = parse_bounce(raw)
    # THEN it is an auto-reply naming no recipient: nothing is suppressed
    assert report.kind is BounceKind.AUTO_REPLY
    assert report.format is ReportFormat.AUTO_REPLY
    assert report.recipients == ()


def test_an_auto_reply_is_never_a_bounce() -> None:
    # GIVEN an out-of-office answer quoting an address in its body (the real
    # samples above quote none) THEN it is an auto-reply with no recipients.
    raw = (
        b"From: Ann <ann@example.org>\r\nTo: b+x@bounces.example.com\r\n"
        b"Subject: Out of Office: back Monday\r\nAuto-Submitted: auto-replied\r\n\r\n"
        b"I am away. Mail bob@example.org instead.\r\n"
    )
    report = parse_bounce(raw)
    assert report.kind is BounceKind.AUTO_REPLY
    assert report.recipients == ()


def test_a_bounce_from_a_mail_system_marked_auto_replied_is_still_a_bounce() -> None:
    # flufl's simple_* samples carry Auto-Submitted: auto-replied from MAILER-DAEMON.
    raw = (
        (FIXTURES / "sisimai-us-google-02.eml")
        .read_bytes()
        .replace(b"MIME-Version: 1.0\n", b"MIME-Version: 1.0\nAuto-Submitted: auto-replied\n", 1)
    )
    assert parse_bounce(raw).kind is BounceKind.HARD


def test_garbage_parses_to_nothing() -> None:
    assert parse_bounce(b"\x00\xff not mail at all").kind is BounceKind.UNRECOGNISED


KEYS = SigningKeyring.from_setting("k2:" + "A" * 43 + ",k1:" + "B" * 43)


def test_verp_return_path_round_trips_and_survives_a_forwarder() -> None:
    message_id = uuid.uuid4()
    address = verp_return_path(KEYS, message_id, "bounces.example.com")
    local = address.partition("@")[0]
    assert len(local) <= 64
    assert match_return_path(KEYS, [address]).message_id == message_id
    # SRS rewriting by a forwarder keeps the signed part inside.
    srs = f"SRS0=HHH=TT=bounces.example.com={local}@forwarder.example".upper()
    assert match_return_path(KEYS, ["other@x.example", srs]).message_id == message_id


def test_a_forged_verp_signature_names_no_message() -> None:
    address = verp_return_path(KEYS, uuid.uuid4(), "bounces.example.com")
    other = uuid.uuid4().hex
    forged = "b+" + other + address[34:]
    match = match_return_path(KEYS, [forged])
    assert match.message_id is None
    assert match.bad_signature


def test_an_old_key_still_verifies_after_rotation() -> None:
    message_id = uuid.uuid4()
    old = SigningKeyring.from_setting("k1:" + "B" * 43)
    address = verp_return_path(old, message_id, "bounces.example.com")
    token = unsubscribe_token(old, message_id)
    assert match_return_path(KEYS, [address]).message_id == message_id
    assert verify_unsubscribe_token(KEYS, token) == message_id
    retired = SigningKeyring.from_setting("k3:" + "C" * 43)
    assert verify_unsubscribe_token(retired, token) is None


def test_a_tampered_unsubscribe_token_is_refused() -> None:
    token = unsubscribe_token(KEYS, uuid.uuid4())
    flipped = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert verify_unsubscribe_token(KEYS, flipped) is None
    assert verify_unsubscribe_token(KEYS, "../../etc") is None
