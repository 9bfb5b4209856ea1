"""Failover across providers for one send, guarded by circuit breakers.

A send tries the providers in order, skipping any whose breaker is open.
A transient failure counts against that provider's breaker and the same
message goes on to the next provider at once. A configuration failure
raises an alarm and fails over too, without touching the breaker (an
unverified sender is one client's problem, not the provider's). A permanent
failure ends the send: the message itself is refused, and another provider
would refuse it as well. A deferred one (greylisting, a full mailbox) ends
this pass too, without touching the breaker: the message is tried again
later, on the queue's backoff.

Only what speaks of the provider's health counts against its breaker, which
every client shares (issue 14): one client's bad recipients must never stop
another client's mail. For the same reason an exception that an adapter did
not classify (a bug, or input it could not handle) is not counted either:
the adapters classify every network and protocol error they can meet, so
what escapes them is evidence about the message or our code, not about the
provider. It is logged with its traceback, fails over like a transient
failure, and the message is retried later (as DEFERRED) if no one sends it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mailroom.adapters import tracing
from mailroom.adapters.breakers import ProviderBreakers
from mailroom.adapters.domain_throttle import DomainThrottle
from mailroom.adapters.metrics.base import Metrics
from mailroom.adapters.operator_signals import OperatorSignals, SignalKey
from mailroom.adapters.providers.base import (
    EmailProvider,
    FailureKind,
    ProviderError,
    ProviderReceipt,
)
from mailroom.adapters.providers.client_relays import ClientRelays, Relay
from mailroom.adapters.providers.sandbox import SandboxProvider
from mailroom.domain.mime import OutgoingEmail

log = logging.getLogger(__name__)
# A provider that just sent successfully through a closed breaker is trusted
# for this long without asking Redis again, across batches too (back-to-back
# batches re-read it three times each, issue 8): another worker's trip is
# noticed at most this late, and this worker's own failure at once.
HEALTHY_RECHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ChainResult:
    """How one send through the chain went."""

    receipt: ProviderReceipt | None
    failures: tuple[ProviderError, ...]  # in the order the providers were tried
    skipped: tuple[str, ...]  # providers passed over because their breaker is open

    @property
    def permanent_failure(self) -> ProviderError | None:
        last = self.failures[-1] if self.failures else None
        return last if last is not None and last.kind is FailureKind.PERMANENT else None

    @property
    def summary(self) -> str:
        """Why nothing was sent, in one line for ``last_error``."""
        if self.failures:
            last = self.failures[-1]
            return f"{last.kind.value}: {last}"
        return f"transient: every provider's circuit breaker is open ({', '.join(self.skipped)})"


class ProviderChain:
    """The configured providers in order, with one breaker each.

    Long-lived (one per process): the SMTP connection, HTTPS pools and
    boto3 clients inside the providers survive between invocations; each
    provider decides when what it holds has idled too long to trust.
    """

    def __init__(
        self,
        providers: Mapping[str, EmailProvider],
        order: Sequence[str],
        breakers: ProviderBreakers,
        signals: OperatorSignals,
        sandbox: EmailProvider | None = None,
        *,
        metrics: Metrics | None = None,
        relays: ClientRelays | None = None,
        throttle: DomainThrottle | None = None,
    ) -> None:
        unknown = [name for name in order if name not in providers]
        if unknown or not order:
            raise ValueError(f"provider order {list(order)} names unknown providers {unknown}")
        self._providers = dict(providers)
        self._order = tuple(order)
        self._breakers = breakers
        self._signals = signals
        self._metrics = metrics or Metrics()
        # Test mode's provider (issue 15): never in the order, never behind a breaker.
        self._sandbox = sandbox if sandbox is not None else SandboxProvider()
        # Providers that sent successfully lately, with when: their
        # breaker was closed then, so for a short while neither the state read
        # nor the success write (each a Redis round trip) can change anything
        # but the timing of noticing another worker's trip.
        self._healthy_since: dict[str, float] = {}
        # Clients' own SMTP relays (issue 20); None: no client has any.
        self._relays = relays
        # Per-recipient-domain throttling (issue 20); None: off.
        self.throttle = throttle

    def relay_for(self, client_id: uuid.UUID, config_id: str | None) -> Relay | None:
        """The client's relay for a message (the one it named, else the default), if any."""
        return self._relays.relay_for(client_id, config_id) if self._relays else None

    @property
    def order(self) -> tuple[str, ...]:
        return self._order

    def breaker_states(self) -> dict[str, str]:
        """Each configured provider's breaker state as Redis has it now."""
        return {name: self._breakers.state(name) for name in self._order}

    def order_for(self, client_order: Sequence[str] | None) -> tuple[str, ...]:
        """A client's own order, narrowed to the configured providers; else the global one."""
        if not client_order:
            return self._order
        narrowed = tuple(dict.fromkeys(n for n in client_order if n in self._providers))
        if not narrowed:
            log.warning(
                "client provider order %s names no configured provider; using %s",
                list(client_order),
                list(self._order),
            )
            return self._order
        return narrowed

    def send(
        self,
        email: OutgoingEmail,
        *,
        client_order: Sequence[str] | None = None,
        message_id: str = "",
        relay: Relay | None = None,
    ) -> ChainResult:
        """Through ``relay`` first if given (behind its own breaker), then the chain's order."""
        failures: list[ProviderError] = []
        skipped: list[str] = []
        candidates = [(name, self._providers[name]) for name in self.order_for(client_order)]
        if relay is not None:
            candidates.insert(0, (relay.name, relay.provider))
        for name, provider in candidates:
            healthy = self._recently_healthy(name)
            if not healthy and not self._breakers.allows(name):
                skipped.append(name)
                continue
            started = time.perf_counter()
            try:
                with tracing.span("worker.send", provider=name):
                    receipt = provider.send(email)
            except ProviderError as error:
                self._healthy_since.pop(name, None)
                failures.append(error)
                self._metrics.provider_error(name, error.kind.value)
                if error.kind is FailureKind.TRANSIENT:
                    self._breakers.record_failure(name, error)
                elif error.kind is FailureKind.CONFIG:
                    self._signals.alarm(
                        SignalKey.PROVIDER_CONFIG_ERROR,
                        f"{name} refused our configuration; failing over: {error.message}",
                        dimensions={"provider": name},
                        context={"message_id": message_id, "error": error.message},
                    )
                else:
                    break  # permanent or deferred: the message, not the provider
                continue
            except Exception as error:
                # A bug in an adapter, or input it could not handle, must not
                # strand the message (it fails over), nor count against a
                # breaker all clients share (see the module's docstring).
                log.exception("provider %s raised unexpectedly", name)
                self._metrics.provider_error(name, "unexpected")
                failures.append(
                    ProviderError(name, FailureKind.DEFERRED, f"unexpected error: {error!r}")
                )
                self._healthy_since.pop(name, None)
                continue
            self._metrics.email_sent(name, time.perf_counter() - started)
            if not healthy:
                self._breakers.record_success(name)
                if self._breakers.state(name) == "closed":
                    self._healthy_since[name] = time.monotonic()
            return ChainResult(receipt, tuple(failures), tuple(skipped))
        return ChainResult(None, tuple(failures), tuple(skipped))

    def send_sandboxed(self, email: OutgoingEmail) -> ChainResult:
        """A test message: the sandbox records it. No real provider or breaker is involved."""
        started = time.perf_counter()
        receipt = self._sandbox.send(email)
        self._metrics.email_sent(receipt.provider, time.perf_counter() - started)
        return ChainResult(receipt, (), ())

    def _recently_healthy(self, name: str) -> bool:
        since = self._healthy_since.get(name)
        if since is None:
            return False
        if time.monotonic() - since > HEALTHY_RECHECK_SECONDS:
            del self._healthy_since[name]
            return False
        return True
