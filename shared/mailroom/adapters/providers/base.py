"""The interface every email provider implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

from mailroom.domain.feedback import DeliveryEvent
from mailroom.domain.mime import OutgoingEmail


class FailureKind(StrEnum):
    """Why a send failed, which decides who pays for it.

    Only TRANSIENT is the provider's fault and counts against its circuit
    breaker, which every client shares: a refusal caused by one message (its
    address, its size, its content) must never stop other clients' mail.
    """

    TRANSIENT = "transient"  # the provider is unwell: try another, count it against the breaker
    PERMANENT = "permanent"  # this message will never go through as it is
    CONFIG = "config"  # our side is misconfigured (credentials, sender)
    # This message, for now (greylisting, a full mailbox: 4xx at RCPT): try
    # it again later, through the same chain; the provider is healthy.
    DEFERRED = "deferred"


class ProviderError(Exception):
    def __init__(self, provider: str, kind: FailureKind, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.kind = kind
        self.message = message
        # Feedback the refusal itself is (issue 16: every recipient refused
        # with a 5xx at RCPT is a bounce of each), applied once it is recorded.
        self.feedback: tuple[DeliveryEvent, ...] = ()


def refuse_smtputf8(provider: str, email: OutgoingEmail) -> None:
    """For a carrier without SMTPUTF8: a UTF-8 local part is the message's permanent problem."""
    if email.requires_smtputf8:
        raise ProviderError(
            provider,
            FailureKind.PERMANENT,
            "an address has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531) "
            f"and {provider} does not offer it",
        )


@dataclass(frozen=True, slots=True)
class ProviderReceipt:
    provider: str
    provider_msg_id: str
    # Delivery feedback known at once, to apply as a webhook's would be once
    # the send is recorded: only the sandbox provider reports any (issue 15).
    feedback: tuple[DeliveryEvent, ...] = ()


class EmailProvider(abc.ABC):
    """Sends finished MIME messages.

    Long-lived: a provider may keep connections open from one send (and one
    batch) to the next, and decides itself when an idle one is stale.
    ``close()`` (or leaving its ``with`` block) releases them.
    """

    name: str

    @abc.abstractmethod
    def send(self, email: OutgoingEmail) -> ProviderReceipt: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release whatever connections the provider holds open."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
