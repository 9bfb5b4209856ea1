"""Loading each function's handler and invoking it the way Lambda would."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devstack.template import LOCAL_ACCOUNT_ID, FunctionSpec

Handler = Callable[[dict[str, Any], Any], Any]


class FunctionLoadError(Exception):
    """A handler file is missing, fails to import, or lacks the handler function."""


class LocalLambdaContext:
    """The attributes and method of the Python runtime's ``LambdaContext``."""

    def __init__(self, spec: FunctionSpec, *, region: str) -> None:
        self.function_name = spec.logical_id
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:{spec.logical_id}"
        )
        # The runtime reads it from AWS_LAMBDA_FUNCTION_MEMORY_SIZE: a string.
        self.memory_limit_in_mb = str(spec.memory_mb)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.logical_id}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + spec.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True, slots=True)
class Invocation:
    result: Any
    duration_ms: float


class LocalFunction:
    """One function of the template, imported once, as a warm container would hold it."""

    def __init__(
        self, spec: FunctionSpec, handler: Handler, *, region: str, lock: threading.Lock
    ) -> None:
        self.spec = spec
        self._handler = handler
        self._region = region
        self._lock = lock

    @property
    def name(self) -> str:
        return self.spec.logical_id

    def invoke(self, event: dict[str, Any]) -> Invocation:
        """Run the handler; its exceptions propagate, as the runtime reports them."""
        # Lambda never runs two invocations in one container at once, and the
        # handlers rely on it: Powertools keeps the current event in a class
        # attribute shared by every resolver (BaseRouter.current_event) and
        # the logger's keys are process-wide. Here every function shares one
        # process, so invocations take turns; HTTP clients still connect
        # concurrently.
        with self._lock:
            # The timeout counts from here, not from the wait for the lock.
            context = LocalLambdaContext(self.spec, region=self._region)
            started = time.perf_counter()
            result = self._handler(event, context)
        return Invocation(result=result, duration_ms=(time.perf_counter() - started) * 1000)


def load_function(spec: FunctionSpec, *, region: str, lock: threading.Lock) -> LocalFunction:
    path = spec.handler_file
    if not path.is_file():
        raise FunctionLoadError(f"{spec.logical_id}: handler file {path} does not exist")
    # Every function's file is called app.py: a module name per function keeps
    # them from replacing each other in sys.modules.
    module_name = f"devstack_functions.{spec.logical_id}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise FunctionLoadError(f"{spec.logical_id}: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before it runs, as a normal import would be: pydantic and
    # typing look the module up by name to resolve annotations.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise FunctionLoadError(
            f"{spec.logical_id}: importing {path} failed: {type(error).__name__}: {error}"
        ) from error
    handler = getattr(module, spec.handler_name, None)
    if not callable(handler):
        raise FunctionLoadError(f"{spec.logical_id}: {path} has no function {spec.handler_name}")
    return LocalFunction(spec, handler, region=region, lock=lock)
