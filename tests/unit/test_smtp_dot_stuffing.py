"""SMTP dot-stuffing (RFC 5321 4.5.2) as the provider does it before DATA's end."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mailroom.adapters.providers.smtp import dot_stuffed

# smtplib's own rule: every "." that begins a line gets a second one.
SMTPLIB_RULE = re.compile(rb"(?m)^\.")

LINES = st.lists(
    st.sampled_from([b"", b".", b"..", b".x", b"x.", b"a.b", b"\r", b" .", b"\xff."]),
    max_size=8,
)


@given(LINES, st.sampled_from([b"\r\n", b"\n"]))
def test_dot_stuffing_matches_smtplibs_rule(lines: list[bytes], ending: bytes) -> None:
    data = ending.join(lines)
    assert dot_stuffed(data) == SMTPLIB_RULE.sub(b"..", data)


def test_leading_dots_are_doubled_at_the_start_and_after_every_line_break() -> None:
    assert dot_stuffed(b".a\r\nb\r\n.\r\n..c") == b"..a\r\nb\r\n..\r\n...c"
