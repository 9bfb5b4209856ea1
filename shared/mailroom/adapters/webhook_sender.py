"""Posting signed webhooks to client endpoints over pooled urllib3 connections.

The SSRF guard resolves the host itself and connects to the address it
checked (TLS still verifies the certificate against the host name), so a DNS
answer cannot change between the check and the connection. Redirects are
never followed; only the first 4 KB of an answer is read, so a 10 MB answer
costs 4 KB and one closed connection. Each endpoint gets its own connection
pool, so one slow receiver never holds another's connections. An attempt ends
at its deadline however its receiver dribbles the answer (``AttemptWatchdog``).
"""

from __future__ import annotations

import abc
import contextlib
import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from mailroom.domain.errors import InvalidRequest
from mailroom.domain.outbound_webhooks import (
    AttemptOutcome,
    WebhookUrl,
    parse_retry_after,
    refuse_address,
)

EXCERPT_BYTES = 4096
USER_AGENT = "Mailroom-Webhooks/1"

Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the host resolves to, in the order the resolver gives them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class WebhookSender(abc.ABC):
    @abc.abstractmethod
    def post(
        self, pool_key: str, url: WebhookUrl, headers: Mapping[str, str], body: bytes
    ) -> AttemptOutcome:
        """One attempt; never raises for the receiver's faults (they are the outcome)."""


class AttemptWatchdog:
    """Ends attempts that outlive their deadline by shutting their socket down.

    Socket timeouts bound each read, not the attempt: a receiver that sends
    its answer a byte every few seconds would hold an attempt (and its lane)
    for hours. Each attempt registers its thread's deadline; the connection
    hands over its socket once the request is sent; this thread shuts down
    the socket of any attempt past its deadline, which ends the blocked read.
    """

    def __init__(self, tick_seconds: float = 0.25) -> None:
        self._tick = tick_seconds
        self._attempts: dict[int, list[Any]] = {}  # thread id -> [deadline, socket, expired]
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def begin(self, seconds: float) -> None:
        with self._lock:
            self._attempts[threading.get_ident()] = [time.monotonic() + seconds, None, False]
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="webhook-watchdog", daemon=True
                )
                self._thread.start()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            attempt = self._attempts.get(threading.get_ident())
            if attempt is not None:
                attempt[1] = sock
                if attempt[2] and sock is not None:  # expired before the socket came
                    _shut(sock)

    def expired(self) -> bool:
        """Whether this thread's attempt ran out of time (its socket was shut down)."""
        with self._lock:
            attempt = self._attempts.get(threading.get_ident())
        return bool(attempt and attempt[2])

    def end(self) -> None:
        """Stop watching this thread's attempt."""
        with self._lock:
            self._attempts.pop(threading.get_ident(), None)

    def _watch(self) -> None:
        while True:
            time.sleep(self._tick)
            now = time.monotonic()
            with self._lock:
                for attempt in self._attempts.values():
                    if not attempt[2] and now >= attempt[0]:
                        attempt[2] = True
                        if attempt[1] is not None:
                            _shut(attempt[1])


def _shut(sock: socket.socket) -> None:
    # Already closed: then nothing is waiting on it.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


WATCHDOG = AttemptWatchdog()


def _watched(base: type) -> type:
    """``base`` (urllib3's connection class), handing its socket to the watchdog."""

    class Watched(base):  # type: ignore[misc]
        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            WATCHDOG.attach(getattr(self, "sock", None))
            return super().getresponse(*args, **kwargs)

    Watched.__name__ = f"Watched{base.__name__}"
    return Watched


class Urllib3WebhookSender(WebhookSender):
    def __init__(
        self,
        *,
        timeout_seconds: float = 15.0,
        allow_private: bool = False,
        resolver: Resolver = system_resolver,
        max_pools: int = 1000,
        connections_per_endpoint: int = 4,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        import urllib3  # loaded by the dispatcher only

        self._urllib3 = urllib3
        # Pools whose connections hand their socket to the attempt watchdog.
        self._http_pool = type(
            "WatchedHTTPConnectionPool",
            (urllib3.HTTPConnectionPool,),
            {"ConnectionCls": _watched(urllib3.connection.HTTPConnection)},
        )
        self._https_pool = type(
            "WatchedHTTPSConnectionPool",
            (urllib3.HTTPSConnectionPool,),
            {"ConnectionCls": _watched(urllib3.connection.HTTPSConnection)},
        )
        self._timeout = urllib3.Timeout(connect=min(5.0, timeout_seconds), read=timeout_seconds)
        self._deadline = timeout_seconds
        self._allow_private = allow_private
        self._resolver = resolver
        self._max_pools = max_pools
        self._per_endpoint = connections_per_endpoint
        self._clock = clock
        self._pools: OrderedDict[tuple[str, str, str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def _address(self, url: WebhookUrl) -> str:
        try:
            literal = ipaddress.ip_address(url.host)
        except ValueError:
            literal = None
        addresses = [url.host] if literal is not None else self._resolver(url.host, url.port)
        if not addresses:
            raise OSError(f"{url.host} resolves to no address")
        for address in addresses:
            # Every address is checked, not just the one used: a name that
            # resolves to a public and a private address is refused.
            refuse_address(ipaddress.ip_address(address), allow_private=self._allow_private)
        return addresses[0]

    def _pool(self, pool_key: str, url: WebhookUrl, address: str) -> Any:
        key = (pool_key, url.scheme, address, url.port)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            common: dict[str, Any] = {
                "host": address,
                "port": url.port,
                "maxsize": self._per_endpoint,
                "block": True,
                "timeout": self._timeout,
                "retries": False,
            }
            if url.scheme == "https":
                pool = self._https_pool(
                    **common,
                    server_hostname=url.host,
                    assert_hostname=url.host,
                    cert_reqs="CERT_REQUIRED",
                )
            else:
                pool = self._http_pool(**common)
            self._pools[key] = pool
            while len(self._pools) > self._max_pools:
                _, old = self._pools.popitem(last=False)
                old.close()
            return pool

    def post(
        self, pool_key: str, url: WebhookUrl, headers: Mapping[str, str], body: bytes
    ) -> AttemptOutcome:
        started = self._clock()

        def elapsed() -> int:
            return int((self._clock() - started) * 1000)

        try:
            address = self._address(url)
        except InvalidRequest as error:
            return AttemptOutcome(None, elapsed(), error=f"blocked: {error.message}")
        except (OSError, UnicodeError) as error:
            return AttemptOutcome(None, elapsed(), error=f"dns: {error}")
        pool = self._pool(pool_key, url, address)
        request_headers = {
            **headers,
            "Host": url.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        WATCHDOG.begin(self._deadline)
        try:
            return self._attempt(pool, url, request_headers, body, elapsed)
        finally:
            WATCHDOG.end()

    def _attempt(
        self,
        pool: Any,
        url: WebhookUrl,
        request_headers: dict[str, str],
        body: bytes,
        elapsed: Callable[[], int],
    ) -> AttemptOutcome:
        urllib3 = self._urllib3
        try:
            response = pool.urlopen(
                "POST",
                url.target,
                body=body,
                headers=request_headers,
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
                pool_timeout=self._deadline,
            )
        except urllib3.exceptions.TimeoutError:
            return AttemptOutcome(None, elapsed(), error="timeout")
        except urllib3.exceptions.HTTPError as error:
            if WATCHDOG.expired():
                return AttemptOutcome(None, elapsed(), error="timeout")
            return AttemptOutcome(None, elapsed(), error=f"connection: {type(error).__name__}")
        try:
            excerpt = response.read(EXCERPT_BYTES)
            finished = response.length_remaining == 0 or (
                len(excerpt) < EXCERPT_BYTES and response.length_remaining in (None, 0)
            )
        except (urllib3.exceptions.HTTPError, OSError):
            excerpt, finished = b"", False
        timed_out = WATCHDOG.expired()
        if finished and not timed_out:
            response.release_conn()
        else:
            # A long answer is not read to its end: the connection is dropped instead.
            response.close()
            if response.connection is not None:
                response.connection.close()
            response.release_conn()
        if timed_out:
            # The head came in time, the rest of the answer did not.
            return AttemptOutcome(None, elapsed(), error="timeout")
        status = int(response.status)
        problem = None
        if 300 <= status < 400:
            problem = "redirect not followed"
        retry_after = None
        if status in (429, 503):
            from datetime import UTC, datetime

            retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
        return AttemptOutcome(
            status,
            elapsed(),
            # PostgreSQL text holds no NUL: a receiver's NUL must not fail the
            # batch's write of outcomes (and so every endpoint in it).
            response_excerpt=excerpt.decode("utf-8", "replace").replace("\x00", "\ufffd"),
            error=problem,
            retry_after=retry_after,
        )

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
