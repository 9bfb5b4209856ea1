"""Prints the API's OpenAPI document: ``make openapi`` writes it to docs/openapi.json."""

from __future__ import annotations

import json

from mailroom.bootstrap import default_services
from mailroom.entrypoints.api import openapi_json


def committed_form() -> str:
    """The document as committed: stable key order, two-space indent, final newline."""
    return json.dumps(json.loads(openapi_json(default_services)), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(committed_form(), end="")
