"""The interface every email provider implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

from mailroom.domain.mime import OutgoingEmail


class FailureKind(StrEnum):
    TRANSIENT = "transient"  # try again later, or on another provider
    PERMANENT = "permanent"  # this message will never go through as it is
    CONFIG = "config"  # our side is misconfigured (credentials, sender)


class ProviderError(Exception):
    def __init__(self, provider: str, kind: FailureKind, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class ProviderReceipt:
    provider: str
    provider_msg_id: str


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
