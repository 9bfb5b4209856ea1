"""A DNS server on a loopback UDP socket, answering from records the test sets.

Built with dnspython's message classes (the same library Mailroom resolves
with, but its server side is ours: a few lines of socket code). Names listed
in ``silent`` get no answer at all, so the resolver times out.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset


@dataclass
class LocalDns:
    host: str
    port: int
    # (lower-case name without trailing dot, type) -> record texts in zone-file form.
    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def publish(self, record_type: str, name: str, value: str, priority: int | None = None) -> None:
        if record_type == "TXT":
            # Long values in 255-byte strings, as a zone would carry a DKIM key.
            text = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
        elif record_type == "MX":
            text = f"{priority or 10} {value.rstrip('.')}."
        else:
            text = value.rstrip(".") + "."
        self.records.setdefault((name.lower().rstrip("."), record_type), []).append(text)

    def withdraw(self, record_type: str, name: str) -> None:
        self.records.pop((name.lower().rstrip("."), record_type), None)

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        record_type = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, record_type))
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        values = self.records.get((name, record_type))
        if values:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 300, "IN", record_type, values)
            )
        elif not any(known == name for known, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()


@contextmanager
def running_dns() -> Iterator[LocalDns]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    server = LocalDns("127.0.0.1", sock.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = server.answer(wire)
            if reply is not None:
                sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, name="local-dns", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()
