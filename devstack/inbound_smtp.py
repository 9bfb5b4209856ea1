"""The local stand-in for SES receiving mail: an SMTP listener in front of the inbound function.

In AWS, mail to the bounce domain reaches SES, whose receipt rule stores it
in S3 and invokes the inbound function with the receipt. Here this listener
does the same against the runner's S3 (moto, or the endpoint given): it
stores each message under ``inbound/<id>`` in the local bucket and invokes
the function with the SES receipt event, so the handler path that runs in
AWS runs locally too. Point a test MTA (or ``swaks``, or smtplib) at the
address in ``.local/dev-credentials.json`` (``inbound_smtp``) to deliver a
bounce to a VERP address.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from devstack.lambda_runtime import LocalFunction
from devstack.template import LOCAL_ACCOUNT_ID

log = logging.getLogger(__name__)
INBOUND_PREFIX = "inbound/"
# SES refuses mail over 40 MB (its receiving limit); so does the listener.
MAX_MESSAGE_BYTES = 40 * 1024 * 1024


def ses_receipt_event(
    *, message_id: str, recipients: list[str], source: str, bucket: str, region: str
) -> dict[str, Any]:
    """The event an SES receipt rule's Lambda action sends, for a message its S3 action stored."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "Records": [
            {
                "eventSource": "aws:ses",
                "eventVersion": "1.0",
                "ses": {
                    "mail": {
                        "timestamp": now,
                        "source": source,
                        "messageId": message_id,
                        "destination": recipients,
                        "headersTruncated": False,
                        "headers": [],
                        "commonHeaders": {},
                    },
                    "receipt": {
                        "timestamp": now,
                        "processingTimeMillis": 0,
                        "recipients": recipients,
                        "spamVerdict": {"status": "PASS"},
                        "virusVerdict": {"status": "PASS"},
                        "spfVerdict": {"status": "GRAY"},
                        "dkimVerdict": {"status": "GRAY"},
                        "action": {
                            "type": "Lambda",
                            "functionArn": (
                                f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:inbound"
                            ),
                            "invocationType": "Event",
                        },
                    },
                },
            }
        ]
    }


class InboundHandler:
    """aiosmtpd handler: store the message, invoke the inbound function, answer by its outcome."""

    def __init__(self, deliver: Callable[[bytes, list[str], str], Any]) -> None:
        self._deliver = deliver

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        content: Any = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else str(content).encode("utf-8")
        recipients = [str(address) for address in envelope.rcpt_tos]
        try:
            outcome = self._deliver(raw, recipients, str(envelope.mail_from or ""))
        except Exception:
            # What SES does when its Lambda action fails is retry later; the
            # sending MTA, told 451, does the same.
            log.exception("the inbound function failed on mail to %s", recipients)
            return "451 4.3.0 inbound processing failed, try again later"
        log.info("inbound mail to %s: %s", ", ".join(recipients), outcome)
        return "250 Message accepted"


class InboundSmtpListener:
    def __init__(
        self,
        function: LocalFunction,
        s3: Any,
        *,
        bucket: str,
        region: str,
        host: str,
        port: int,
    ) -> None:
        self._function = function
        self._s3 = s3
        self._bucket = bucket
        self._region = region
        self._controller = Controller(
            InboundHandler(self.deliver),
            hostname=host,
            port=port,
            server_hostname="inbound.devstack.localhost",
            data_size_limit=MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
        )

    @property
    def address(self) -> str:
        return f"{self._controller.hostname}:{self._controller.port}"

    def deliver(self, raw: bytes, recipients: list[str], source: str) -> Any:
        """SES's two actions: store in S3, then invoke the function with the receipt."""
        message_id = uuid.uuid4().hex
        self._s3.put_object(Bucket=self._bucket, Key=f"{INBOUND_PREFIX}{message_id}", Body=raw)
        event = ses_receipt_event(
            message_id=message_id,
            recipients=recipients,
            source=source,
            bucket=self._bucket,
            region=self._region,
        )
        return self._function.invoke(event).result

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
