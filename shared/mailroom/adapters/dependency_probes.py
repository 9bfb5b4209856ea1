"""Asking each outside system whether it answers, for GET /health/detailed and /ready.

Provider probes open a connection to the provider (SMTP: connect and EHLO;
HTTPS APIs: any HTTP answer from the base URL) and are cached per process
for PROVIDER_PROBE_TTL_SECONDS: an operator's dashboard polling the health
route must not become a load on the relay or the provider's API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailroom.adapters.db.unit_of_work import Database
    from mailroom.config import Settings

# smtplib, ssl, urllib and alembic are imported by the probes that use them:
# every function builds DependencyProbes at bootstrap, only the status
# function's /health/detailed and /ready run them (cold start, issue 8).

PROBE_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    latency_ms: float
    error: str | None = None


def timed(probe: Callable[[], None]) -> ProbeResult:
    """Run ``probe`` (answers by returning, fails by raising) and time it."""
    started = time.perf_counter()
    try:
        probe()
    except Exception as error:  # noqa: BLE001 - any failure means "down"
        elapsed = (time.perf_counter() - started) * 1000
        return ProbeResult(False, round(elapsed, 2), f"{type(error).__name__}: {error}"[:300])
    return ProbeResult(True, round((time.perf_counter() - started) * 1000, 2))


@dataclass(frozen=True, slots=True)
class MigrationState:
    current: frozenset[str]
    heads: frozenset[str]

    @property
    def at_head(self) -> bool:
        return self.current == self.heads


class DependencyProbes:
    """The probes /health/detailed runs; one per process (the provider cache lives here)."""

    def __init__(self, settings: Settings, database: Database | None) -> None:
        self._settings = settings
        self._database = database
        self._cache: dict[str, tuple[float, ProbeResult]] = {}
        self._lock = threading.Lock()

    def migrations(self) -> MigrationState:
        """The revisions the database is at, and the heads this code ships."""
        from alembic.script import ScriptDirectory
        from sqlalchemy import text

        from mailroom.adapters.db.migrate import alembic_config

        heads = frozenset(
            ScriptDirectory.from_config(alembic_config(self._settings.database_url)).get_heads()
        )
        if self._database is None:
            raise RuntimeError("no database is wired")
        with self._database.engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        return MigrationState(frozenset(str(row[0]) for row in rows), heads)

    def provider(self, name: str) -> ProbeResult:
        """Whether provider ``name`` answers, as last seen within the cache's TTL."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and now - cached[0] < self._settings.provider_probe_ttl_seconds:
                return cached[1]
        result = timed(lambda: self._probe_provider(name))
        with self._lock:
            self._cache[name] = (time.monotonic(), result)
        return result

    def _probe_provider(self, name: str) -> None:
        settings = self._settings
        if name == "smtp":
            _smtp_ehlo(settings)
        elif name == "sendgrid":
            _https_answers(settings.sendgrid_base_url)
        elif name == "mailgun":
            _https_answers(settings.mailgun_base_url)
        elif name == "ses":
            _https_answers(
                settings.aws_endpoint_url or f"https://email.{settings.aws_region}.amazonaws.com"
            )
        else:
            raise ValueError(f"no probe for provider {name!r}")


def _smtp_ehlo(settings: Settings) -> None:
    import smtplib
    import ssl

    timeout = min(settings.smtp_timeout_seconds, PROBE_TIMEOUT_SECONDS)
    client: smtplib.SMTP
    if settings.smtp_security == "tls":
        client = smtplib.SMTP_SSL(
            settings.smtp_host,
            settings.smtp_port,
            timeout=timeout,
            context=ssl.create_default_context(),
        )
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    try:
        code, answer = client.ehlo()
        if code != 250:
            raise smtplib.SMTPResponseException(code, answer)
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _https_answers(url: str) -> None:
    """Any HTTP answer (a 401 or 404 included) means the API is reachable."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 - operator-set URL
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS):  # noqa: S310
            return
    except urllib.error.HTTPError:
        return
    except (TimeoutError, urllib.error.URLError) as error:
        raise ConnectionError(f"{url} did not answer: {error}") from error


def queue_depth(client: Any, queue_url: str) -> int:
    """Messages waiting on a queue (visible and delayed; in flight excluded)."""
    answer = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
    )
    attributes = answer.get("Attributes", {})
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
        attributes.get("ApproximateNumberOfMessagesDelayed", 0)
    )
