"""Each sample template's message, signed as the worker signs it, through SpamAssassin (issue 16).

Debian's ``spamassassin -t -L`` (local tests only: no DNS, no network) scores
the message. It must score below 2.0 with no DKIM, MIME or header rule
firing. Where the binary is missing the test skips, saying so loudly.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailroom.adapters.templates import FileTemplateStore, TemplateRenderer
from mailroom.domain import dkim
from mailroom.domain.mime import build_mime
from mailroom.domain.model import Message

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SPAMASSASSIN = shutil.which("spamassassin")
# Rules about DKIM (other than "signed"/"valid"), MIME structure and headers:
# none may fire on what Mailroom writes.
FORBIDDEN = re.compile(
    r"^(DKIM_(?!SIGNED$|VALID)|MIME_|MPART_|HTML_MIME_|MISSING_|INVALID_|HEADER_|FROM_|"
    r"TO_NO_BRKTS|DATE_IN_|MSGID_|SUBJ_ILLEGAL|BAD_ENC|CTYPE_)"
)
MAX_SCORE = 2.0

needs_spamassassin = pytest.mark.skipif(
    SPAMASSASSIN is None,
    reason="SKIPPED LOUDLY: the spamassassin binary is not installed (Debian package "
    "'spamassassin'); the deliverability check of issue 16 did not run",
)


def _score(message: bytes) -> tuple[float, list[str]]:
    assert SPAMASSASSIN is not None
    result = subprocess.run(
        [SPAMASSASSIN, "-t", "-L"], input=message, capture_output=True, timeout=180, check=True
    )
    head = result.stdout.split(b"\r\n\r\n")[0].split(b"\n\n")[0].decode("utf-8", "replace")
    status = re.search(r"X-Spam-Status: .*?score=(-?[\d.]+).*?tests=(.*?)autolearn", head, re.S)
    assert status is not None, head
    tests = [t.strip() for t in status[2].replace("\r", "").split(",") if t.strip()]
    return float(status[1]), [t.split()[0] for t in tests if t.split()]


def _signed_sample(name: str) -> bytes:
    renderer = TemplateRenderer()
    props = json.loads((TEMPLATES / name / "sample.json").read_text())
    rendered = renderer.render(FileTemplateStore(TEMPLATES).get(name), props)
    message = Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t",
        template_name=name,
        from_address="Acme Support <support@acme-mail.com>",
        to=["Ada Lovelace <ada@example.org>"],
        created_at=datetime.now(UTC),
    )
    algorithm = dkim.DkimAlgorithm.RSA_SHA256
    key = dkim.load_private_key(dkim.generate_private_key(algorithm))
    signing = dkim.SigningKey("acme-mail.com", "mr202612", algorithm, key)
    return dkim.sign(build_mime(message, rendered).mime, [signing])


@needs_spamassassin
@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir()))
def test_each_sample_template_scores_low_with_no_dkim_mime_or_header_rule(name: str) -> None:
    # GIVEN the sample template's message, rendered, built and signed as the worker does
    signed = _signed_sample(name)
    # WHEN SpamAssassin scores it
    score, rules = _score(signed)
    # THEN it is well under the bar, and no structural rule fired
    assert score < MAX_SCORE, (score, rules)
    assert [rule for rule in rules if FORBIDDEN.match(rule)] == [], rules


@needs_spamassassin
def test_the_check_notices_a_broken_message() -> None:
    # GIVEN a signed sample with its Date and Message-ID removed (what the check must catch)
    signed = _signed_sample("welcome")
    broken = re.sub(rb"\r\n(Date|Message-ID): [^\r]*", b"", signed)
    # WHEN SpamAssassin scores it
    _, rules = _score(broken)
    # THEN a header rule fires: the test above can fail
    assert [rule for rule in rules if FORBIDDEN.match(rule)], rules
