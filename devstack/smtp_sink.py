"""An SMTP server that delivers nowhere: every message becomes an ``.eml`` file in the outbox."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from devstack.atomic_file import write_atomically

log = logging.getLogger(__name__)


def ehlo_answer(
    session: Session, hostname: str, responses: list[str], *, pipelining: bool
) -> list[str]:
    """What an aiosmtpd EHLO hook answers, offering PIPELINING or not.

    aiosmtpd reads one command at a time either way, so offering it is only
    a matter of saying so. With an EHLO hook, recording the greeting is the
    hook's job.
    """
    session.host_name = hostname
    if pipelining:
        responses.insert(-1, "250-PIPELINING")
    return responses


class OutboxHandler:
    """aiosmtpd handler: accept every message and store it as it arrived."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # Relays in service offer PIPELINING, so the local sink does too: the
        # worker's pipelined path is the one run locally.
        return ehlo_answer(session, hostname, responses, pipelining=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        content: Any = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else str(content).encode("utf-8")
        recipients = ", ".join(str(address) for address in envelope.rcpt_tos)
        # What a mailbox adds on delivery: the envelope is otherwise lost, and
        # it is the only place Bcc recipients appear.
        trace = (
            f"Return-Path: <{envelope.mail_from or ''}>\r\nX-Envelope-To: {recipients}\r\n"
        ).encode()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.outbox / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        write_atomically(path, trace + data)
        subject = BytesHeaderParser(policy=default_policy).parsebytes(data).get("Subject", "")
        log.info("mail to %s, %r: %s", recipients, str(subject), path)
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, outbox: Path, *, host: str, port: int) -> None:
        outbox.mkdir(parents=True, exist_ok=True)
        self.outbox = outbox
        self._controller = Controller(
            OutboxHandler(outbox),
            hostname=host,
            port=port,
            server_hostname="devstack.localhost",
            # Accept what a modern relay accepts: internationalised addresses.
            enable_SMTPUTF8=True,
        )

    @property
    def host(self) -> str:
        return str(self._controller.hostname)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
