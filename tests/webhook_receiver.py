"""A real HTTP receiver on 127.0.0.1 for outbound webhook tests and the benchmark.

Each path behaves as told (``behaviour``): answer a status, sleep first,
redirect, answer a huge body. Every request is kept with its headers and
body, so tests verify them with the ``standardwebhooks`` library.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Behaviour:
    status: int = 200
    delay_seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    # Answer this many requests with ``status``, then 200.
    times: int | None = None
    # Send the whole answer one byte at a time, this long apart: each read
    # gets a byte well inside a socket timeout, the answer takes far longer.
    dribble_seconds: float = 0.0


class Receiver:
    def __init__(self, *, keep_bodies: bool = True) -> None:
        self.received: list[Received] = []
        self.counts: Counter[str] = Counter()
        self.behaviour: dict[str, Behaviour] = {}
        self._keep = keep_bodies
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender went away mid-request (a test kills its
                    # dispatcher): as any HTTP server, nothing was received.
                    self.close_connection = True
                    return
                path = self.path
                behaviour = receiver.behaviour.get(path, Behaviour())
                with receiver._lock:
                    receiver.counts[self.headers.get("webhook-id", "")] += 1
                    if receiver._keep:
                        receiver.received.append(
                            Received(path, {k.lower(): v for k, v in self.headers.items()}, body)
                        )
                    status = behaviour.status
                    if behaviour.times is not None:
                        if behaviour.times <= 0:
                            status = 200
                        behaviour.times -= 1
                if behaviour.delay_seconds:
                    time.sleep(behaviour.delay_seconds)
                answer = behaviour.body if status == behaviour.status else b"ok"
                if behaviour.dribble_seconds:
                    raw = b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (
                        status,
                        len(answer),
                        answer,
                    )
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        for index in range(len(raw)):
                            self.wfile.write(raw[index : index + 1])
                            self.wfile.flush()
                            time.sleep(behaviour.dribble_seconds)
                    self.close_connection = True
                    return
                self.send_response(status)
                for name, value in behaviour.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
