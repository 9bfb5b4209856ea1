"""Loaded by the fuzz run (SCHEMATHESIS_HOOKS): how to put a JSON-lines body on the wire.

Schemathesis serializes JSON, forms, XML and any ``text/*`` type itself, but
has no serializer for ``application/x-ndjson``, the suppression import's
second media type; without one it would never send that body. The document
declares the body as a string, so the generated value is the file's text.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(context: Any, value: Any) -> bytes | None:
    # Negative cases generate other types too (null, numbers, objects): each
    # goes as its JSON text, one line, as a careless client would send it.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()
