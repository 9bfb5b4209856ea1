"""Bulk batches' domain (issue 17): the request, the recipients files, the address check."""

from __future__ import annotations

from email.utils import getaddresses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mailroom.domain.addresses import BARE_ADDRESS, Mailbox
from mailroom.domain.batches import (
    MAX_INLINE_RECIPIENTS,
    MAX_LINE_BYTES,
    BatchRecipient,
    BatchRequest,
    PlannedRecipient,
    RecipientRecord,
    check_address,
    csv_columns,
    csv_records,
    ndjson_records,
    split_lines,
)
from mailroom.domain.batches import _plain_recipient as plain_recipient
from mailroom.domain.errors import InvalidRequest, NoEmailColumn


def request(**fields: Any) -> BatchRequest:
    return BatchRequest.model_validate({"template": "welcome", **fields})


def test_10000_inline_recipients_are_accepted_and_10001_refused() -> None:
    # GIVEN the limit's worth of recipients, and one more
    people = [{"to": f"u{i}@example.com"} for i in range(MAX_INLINE_RECIPIENTS)]
    # WHEN each is validated THEN the first passes, the second is a validation error
    assert len(request(recipients=people).recipients) == MAX_INLINE_RECIPIENTS
    with pytest.raises(ValidationError) as refused:
        request(recipients=[*people, {"to": "one-more@example.com"}])
    assert refused.value.errors()[0]["loc"] == ("recipients",)


def test_recipients_inline_and_upload_together_or_neither_are_refused() -> None:
    with pytest.raises((ValidationError, InvalidRequest)):
        request(recipients=[{"to": "a@example.com"}], recipients_upload=True)
    with pytest.raises((ValidationError, InvalidRequest)):
        request()
    with pytest.raises((ValidationError, InvalidRequest)):
        request(to=["a@example.com"], recipients=[{"to": "b@example.com"}])


def test_the_content_is_a_single_sends_without_recipients() -> None:
    # GIVEN a batch with a subject and default props
    batch = request(subject="Hello", props={"a": 1}, recipients=[{"email": "a@example.com"}])
    # WHEN its shared content is taken THEN it holds the single send's fields only
    content = batch.content()
    assert content["subject"] == "Hello"
    assert content["props"] == {"a": 1}
    assert not {"to", "cc", "bcc", "recipients"} & set(content)


def lines_of(data: bytes, chunk: int = 7) -> list[tuple[bytes, int]]:
    return list(split_lines(data[i : i + chunk] for i in range(0, len(data), chunk)))


def test_split_lines_gives_each_line_and_the_offset_after_it() -> None:
    data = b"one\ntwo\n\nthree"
    assert lines_of(data) == [(b"one\n", 4), (b"two\n", 8), (b"\n", 9), (b"three", 14)]


def test_a_line_over_the_limit_is_cut_and_then_malformed() -> None:
    # GIVEN a line longer than MAX_LINE_BYTES between two good ones
    data = (
        b'{"to": "a@example.com"}\n' + b"x" * (MAX_LINE_BYTES * 3) + b'\n{"to": "b@example.com"}\n'
    )
    # WHEN it is read THEN the long line is one malformed record and the next still reads
    records = list(ndjson_records(lines_of(data, chunk=50_000)))
    assert [r.address for r in records] == ["a@example.com", None, "b@example.com"]
    assert records[1].error is not None
    assert "line 2" in records[1].error


def test_malformed_ndjson_lines_name_their_line_and_the_rest_proceeds() -> None:
    data = b'{"to": "a@example.com"}\n{oops\n[1]\n{"to": "b@example.com", "extra": 1}\n'
    records = list(ndjson_records(lines_of(data)))
    assert [r.error is None for r in records] == [True, False, False, False]
    assert [r.line for r in records] == [1, 2, 3, 4]
    assert "malformed line 2" in (records[1].error or "")


def test_a_csv_needs_an_email_column() -> None:
    with pytest.raises(NoEmailColumn) as refused:
        csv_columns(b"name,phone\n")
    assert refused.value.code == "no_email_column"


def test_csv_columns_become_props_and_metadata_and_short_rows_are_malformed() -> None:
    columns = csv_columns(b"\xef\xbb\xbfFirst Name,E-Mail,Email,metadata.segment\n")
    data = b'Ada,x,ada@example.com,vip\n"Multi\nLine",y,bob@example.com,std\nshort\n'
    records = list(csv_records(columns, lines_of(data)))
    assert records[0].address == "ada@example.com"
    assert records[0].props == {"First Name": "Ada", "E-Mail": "x"}
    assert records[0].metadata == {"segment": "vip"}
    assert (records[1].line, records[1].props["First Name"]) == (3, "Multi\nLine")
    assert records[2].line == 5
    assert "fields" in (records[2].error or "")


def test_check_address_uses_the_single_sends_validation() -> None:
    good = check_address(RecipientRecord(0, None, address="Ada <Ada@Example.COM>"))
    assert isinstance(good, PlannedRecipient)
    assert (good.header_value, good.bare) == ("Ada <Ada@example.com>", "ada@example.com")
    bad = check_address(RecipientRecord(1, None, address="nobody"))
    assert isinstance(bad, str)
    assert "not a valid email address" in bad


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_the_bare_address_fast_path_reads_as_getaddresses_would(raw: str) -> None:
    # GIVEN any text the fast path takes as a bare address
    if BARE_ADDRESS.fullmatch(raw) is None:
        return
    # THEN getaddresses would have read it the same way: no display name, all of it
    assert getaddresses([raw]) == [("", raw)]


def test_mailbox_parse_is_unchanged_for_bare_and_named_addresses() -> None:
    assert Mailbox.parse("to", "a.b+c@Example.com").header_value() == "a.b+c@example.com"
    assert Mailbox.parse("to", "Ada <a@example.com>").display_name == "Ada"


_ADDRESS_CHARS = "abcXYZ019.+-_!#'~@"


@given(
    st.text(alphabet=_ADDRESS_CHARS, min_size=1, max_size=30),
    st.sampled_from(
        [
            "example.com",
            "EXAMPLE.Com",
            "localhost",
            "example.invalid",
            "a..b.com",
            "b.123",
            "xn--bcher-kva.example",
            "mail.example.co.uk",
            "ex_ample.com",
            "example.com.",
        ]
    ),
)
def test_the_plain_address_fast_path_answers_as_email_validator_would(
    local: str, domain: str
) -> None:
    # GIVEN an address the fast path answers for
    from email_validator import EmailNotValidError, validate_email

    from mailroom.domain.addresses import _plain_address

    address = f"{local}@{domain}"
    fast = _plain_address(address)
    if fast is None:
        return
    # THEN email-validator accepts it and normalizes it the same way
    try:
        normalized = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise AssertionError(f"{address!r}: fast path accepted, email-validator: {error}") from None
    assert fast == normalized


def test_the_plain_address_fast_path_leaves_the_unusual_to_email_validator() -> None:
    from mailroom.domain.addresses import _plain_address

    assert _plain_address("a.b+c@EXAMPLE.com") == "a.b+c@example.com"
    # RFC 2142 role names are lowercased by email-validator: it answers them
    assert _plain_address("Postmaster@example.com") is None
    assert _plain_address("ada@localhost") is None
    assert _plain_address("ada@xn--bcher-kva.example") is None
    assert _plain_address("adà@example.com") is None
    assert _plain_address(f"{'a' * 65}@example.com") is None
    assert Mailbox.parse("to", "Postmaster@Example.com").address == "postmaster@example.com"


_JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


_RECIPIENT_LINES = st.fixed_dictionaries(
    {"to": st.text(max_size=1000) | _JSON_SCALARS},
    optional={
        "props": st.dictionaries(st.text(max_size=4), _JSON_VALUES, max_size=3) | _JSON_VALUES,
        "metadata": st.dictionaries(st.text(max_size=4), _JSON_VALUES, max_size=55) | _JSON_VALUES,
        "email": st.text(max_size=5),
        "name": _JSON_SCALARS,
    },
) | st.dictionaries(
    st.sampled_from(["to", "email", "props", "metadata"]) | st.text(max_size=3),
    _JSON_VALUES,
    max_size=4,
)


@given(_RECIPIENT_LINES)
def test_the_plain_recipient_fast_path_answers_as_the_model_would(line: dict[str, Any]) -> None:
    # GIVEN any JSON object as an NDJSON line might carry
    plain = plain_recipient(line)
    # WHEN the fast path takes it THEN the model accepts it and reads the same
    if plain is not None:
        model = BatchRecipient.model_validate(line)
        assert plain == (model.to, model.props, model.metadata)


def test_the_plain_recipient_fast_path_takes_the_usual_lines_and_leaves_the_rest() -> None:
    usual = {"to": "a@example.com", "props": {"n": [1]}, "metadata": {"row": 1, "ok": True}}
    assert plain_recipient(usual) == ("a@example.com", {"n": [1]}, {"row": 1, "ok": True})
    assert plain_recipient({"email": "a@example.com"}) == ("a@example.com", {}, {})
    # Each of these is the model's to answer (or refuse): a name for its error.
    for unusual in (
        {"to": "a@example.com", "email": "b@example.com"},
        {"to": "a@example.com", "extra": 1},
        {"to": ""},
        {"to": 5},
        {"to": "a@example.com", "metadata": {"nested": {"x": 1}}},
        {"to": "a@example.com", "metadata": {f"k{i}": i for i in range(51)}},
        {"to": "a@example.com", "props": None},
    ):
        assert plain_recipient(unusual) is None
