"""DNS lookups for sending-domain verification, with dnspython.

The resolver's address is configurable (``DNS_RESOLVER``), so tests point it
at a DNS server of their own on 127.0.0.1. A timeout is reported as such,
never as "missing": slow DNS says nothing about what is published.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum


class LookupOutcome(StrEnum):
    ANSWERED = "answered"
    NO_RECORD = "no_record"  # NXDOMAIN or no record of that type
    TIMEOUT = "timeout"  # no answer in time, or the server failed (SERVFAIL)


@dataclass(frozen=True, slots=True)
class Lookup:
    outcome: LookupOutcome
    values: tuple[str, ...] = ()


class DnsLookup(abc.ABC):
    @abc.abstractmethod
    def lookup(self, name: str, record_type: str) -> Lookup:
        """TXT strings joined per record; MX as ``<priority> <host>``; CNAME as the target."""


class DnspythonLookup(DnsLookup):
    def __init__(
        self, nameservers: list[tuple[str, int]] | None, *, timeout_seconds: float
    ) -> None:
        import dns.resolver

        if nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [host for host, _ in nameservers]
            resolver.port = nameservers[0][1]
        else:
            resolver = dns.resolver.Resolver()
        resolver.timeout = timeout_seconds
        resolver.lifetime = timeout_seconds
        self._resolver = resolver

    def lookup(self, name: str, record_type: str) -> Lookup:
        import dns.exception
        import dns.resolver

        try:
            answer = self._resolver.resolve(name, record_type, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Lookup(LookupOutcome.NO_RECORD)
        except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError):
            return Lookup(LookupOutcome.TIMEOUT)
        except dns.exception.DNSException:
            return Lookup(LookupOutcome.TIMEOUT)
        if answer.rrset is None:
            return Lookup(LookupOutcome.NO_RECORD)
        values: list[str] = []
        for record in answer.rrset:
            if record_type == "TXT":
                values.append(b"".join(record.strings).decode("utf-8", "replace"))
            elif record_type == "MX":
                values.append(f"{record.preference} {record.exchange.to_text().rstrip('.')}")
            else:
                values.append(record.to_text().rstrip("."))
        return Lookup(LookupOutcome.ANSWERED, tuple(values))


def parse_nameservers(setting: str) -> list[tuple[str, int]]:
    """``"127.0.0.1:5353, ::1"`` as (host, port) pairs; port 53 when not given."""
    servers: list[tuple[str, int]] = []
    for entry in (part.strip() for part in setting.split(",")):
        if not entry:
            continue
        if entry.startswith("["):  # [::1]:5353
            host, _, port = entry[1:].partition("]:")
        elif entry.count(":") == 1:
            host, _, port = entry.partition(":")
        else:
            host, port = entry, ""
        servers.append((host.strip("[]"), int(port) if port else 53))
    return servers
