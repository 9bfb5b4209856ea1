"""SERVICE_ROLE=api|worker|scheduler|all: the long-running forms of the Lambda functions."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from devstack.api_gateway import RestApiGateway, RouteTarget
from devstack.scheduler import Scheduler
from devstack.sqs_poller import QueuePoller
from hosting import stack as host_stack
from hosting.stack import HostSettings

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger("hosting")
ROLES = ("api", "worker", "scheduler", "all")
STOP_SECONDS = 30.0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s", stream=sys.stdout)
    settings = HostSettings.from_environment()
    if settings.role not in ROLES:
        log.error("SERVICE_ROLE must be one of %s, not %r", ", ".join(ROLES), settings.role)
        return 2
    runners = {"api": run_api, "worker": run_worker, "scheduler": run_scheduler, "all": run_all}
    return runners[settings.role](settings)


def wsgi_app(settings: HostSettings | None = None) -> WSGIApplication:
    """The API functions behind one WSGI app (what each gunicorn process serves).

    ``/metrics`` is Prometheus's (issue 23). Each gunicorn process counts for
    itself, so a scrape sees the process that answered it: run one process
    per container (API_WORKERS=1) where exact totals matter, and let
    Prometheus sum the containers.
    """
    settings = settings or HostSettings.from_environment()
    # Containers are scraped by Prometheus; Lambda writes EMF instead.
    os.environ.setdefault("METRICS_BACKEND", "prometheus")
    stack = host_stack.load(settings)
    host_stack.export_environment(stack, host_stack.queues(settings, stack))
    loaded = host_stack.functions(stack, settings.region)
    targets = [
        RouteTarget(route=route, function=loaded[spec.logical_id]) for spec, route in stack.routes
    ]
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from mailroom.bootstrap import default_services
    from mailroom.entrypoints.metrics_endpoint import metrics_app

    gateway = RestApiGateway(targets, stage=stack.stage)
    return DispatcherMiddleware(gateway, {"/metrics": metrics_app(default_services)})


def run_api(settings: HostSettings) -> int:
    """gunicorn, several processes, each with its own copy of the functions (like containers)."""
    from gunicorn.app.base import BaseApplication

    class Api(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped (Any base)
        def load_config(self) -> None:
            self.cfg.set("bind", settings.api_bind)
            # gunicorn parses its settings from text, as from its command line.
            self.cfg.set("workers", str(settings.api_workers))
            # One request at a time per process: the handlers rely on it, as in Lambda.
            self.cfg.set("threads", "1")
            self.cfg.set("timeout", "60")
            self.cfg.set("graceful_timeout", str(int(STOP_SECONDS)))
            self.cfg.set("accesslog", "-")

        def load(self) -> Any:
            return wsgi_app(settings)

    log.info("api on %s, %d processes", settings.api_bind, settings.api_workers)
    Api().run()
    return 0


def run_worker(settings: HostSettings) -> int:
    """Long-poll every SQS queue a function is fed from; settle batches as Lambda does."""
    import boto3

    stack = host_stack.load(settings)
    found = host_stack.queues(settings, stack)
    host_stack.export_environment(stack, found)
    loaded = host_stack.functions(stack, settings.region)
    pollers = [
        QueuePoller(
            boto3.client("sqs", region_name=settings.region),
            found[trigger.queue],
            trigger,
            loaded[spec.logical_id],
            region=settings.region,
        )
        for spec in stack.functions
        for trigger in spec.sqs_triggers
        if trigger.enabled
    ]
    for poller in pollers:
        poller.start()
    log.info("worker polling %d queue(s)", len(pollers))
    _wait_for_stop()
    return 0 if all(poller.stop(STOP_SECONDS) for poller in pollers) else 1


def run_scheduler(settings: HostSettings) -> int:
    """Invoke every scheduled function of the template on its rate()."""
    stack = host_stack.load(settings)
    host_stack.export_environment(stack, host_stack.queues(settings, stack))
    loaded = host_stack.functions(stack, settings.region)
    schedulers = [
        Scheduler(trigger, loaded[spec.logical_id], region=settings.region)
        for spec in stack.functions
        for trigger in spec.schedules
        if trigger.enabled
    ]
    for scheduler in schedulers:
        scheduler.start()
    log.info("scheduler running %d schedule(s)", len(schedulers))
    _wait_for_stop()
    return 0 if all(scheduler.stop(STOP_SECONDS) for scheduler in schedulers) else 1


def run_all(settings: HostSettings) -> int:
    """api, worker and scheduler as child processes; one ending (or SIGTERM) stops all."""
    if settings.provision_queues:
        # Once, before the roles race to create the same queues.
        host_stack.queues(settings, host_stack.load(settings))
    children = {
        role: subprocess.Popen(
            [sys.executable, "-m", "hosting"],
            env={**os.environ, "SERVICE_ROLE": role, "MAILROOM_PROVISION_QUEUES": "false"},
        )
        for role in ("api", "worker", "scheduler")
    }
    stop = threading.Event()
    _on_stop_signals(stop.set)
    while not stop.wait(0.5):
        ended = [role for role, child in children.items() if child.poll() is not None]
        if ended:
            log.error("%s stopped; stopping the others", ", ".join(ended))
            break
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS + 5
    codes = []
    for child in children.values():
        try:
            codes.append(child.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    return 0 if stop.is_set() and all(code == 0 for code in codes) else 1


def _wait_for_stop() -> None:
    stop = threading.Event()
    _on_stop_signals(stop.set)
    stop.wait()
    log.info("stopping")


def _on_stop_signals(callback: Any) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        callback()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
