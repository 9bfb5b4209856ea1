"""`python -m devstack.sam_invoke FUNCTION -e EVENT --env-vars FILE`: sam local invoke, no Docker.

What `sam local invoke` does for a Python function, in this process: take
the function's variables from the ``--env-vars`` file (only those the
template declares, as SAM does), import its handler from its CodeUri as the
runtime would, and call it once per event, printing each answer as one JSON
line. It is how the events of events/<function>/ are checked here (no
Docker); with Docker, `sam local invoke` takes the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from devstack.lambda_runtime import FunctionLoadError, load_function
from devstack.sam_local import declared_variables
from devstack.settings import DevstackSettings
from devstack.template import TemplateError, load_stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam_invoke", description=__doc__.splitlines()[0])
    parser.add_argument("function", help="the function's logical id in template.yaml")
    parser.add_argument("-e", "--event", type=Path, action="append", required=True)
    parser.add_argument("--env-vars", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = DevstackSettings()
    try:
        stack = load_stack(
            settings.template_path, stack_name=settings.stack_name, region=settings.aws_region
        )
    except TemplateError as error:
        print(f"sam_invoke: {error}", file=sys.stderr)
        return 2
    spec = next((f for f in stack.functions if f.logical_id == args.function), None)
    if spec is None:
        print(f"sam_invoke: no function {args.function} in the template", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = json.loads(args.env_vars.read_text(encoding="utf-8"))
    declared = set(declared_variables(stack, spec))
    # SAM applies "Parameters" to every function, then the function's own
    # object, and silently drops a variable the template does not declare.
    for section in (overrides.get("Parameters") or {}, overrides.get(spec.logical_id) or {}):
        os.environ.update({k: str(v) for k, v in section.items() if k in declared})
    try:
        function = load_function(spec, region=settings.aws_region, lock=threading.Lock())
    except FunctionLoadError as error:
        print(f"sam_invoke: {error}", file=sys.stderr)
        return 2
    for path in args.event:
        event = json.loads(path.read_text(encoding="utf-8"))
        invocation = function.invoke(event)
        print(json.dumps({"event": str(path), "result": invocation.result}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
