"""SMTP, with STARTTLS or implicit TLS, AUTH, and one connection kept across batches."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import time
from datetime import UTC, datetime
from typing import Literal

from mailroom.adapters.providers.base import (
    EmailProvider,
    FailureKind,
    ProviderError,
    ProviderReceipt,
)
from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType, RejectReason
from mailroom.domain.mime import OutgoingEmail, is_plain_address

Security = Literal["none", "starttls", "tls"]
# A reused connection idle for longer than this is checked with a NOOP first.
NOOP_AFTER_IDLE_SECONDS = 1.0
# One idle for longer than this is replaced without asking: the container may
# have been frozen between invocations, or a NAT may have forgotten the flow,
# and a NOOP on a silently dead socket would wait out the whole timeout.
# Relays keep an idle session open far longer (Postfix: 300 s).
REPLACE_AFTER_IDLE_SECONDS = 30.0


class SmtpProvider(EmailProvider):
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Security = "none",
        username: str | None = None,
        password: str | None = None,
        timeout_seconds: float = 10.0,
        reuse_connection: bool = True,
    ) -> None:
        self._host = host
        self._port = port
        self._security = security
        self._username = username
        self._password = password
        self._timeout = timeout_seconds
        # Off only to measure what reuse is worth (bench/worker_smtp.py).
        self._reuse = reuse_connection
        self._connection: smtplib.SMTP | None = None
        self._tls: ssl.SSLContext | None = None
        # When the connection last answered; a NOOP checks it only after it
        # has idled (bench/worker_pipeline.py: a NOOP per message cost ~0.5 ms).
        self._last_used = 0.0

    def send(self, email: OutgoingEmail) -> ProviderReceipt:
        # Each refusal is classified by whose problem it is (issue 14): only
        # the relay's own trouble (no connection, a timeout, 421, 4xx before
        # any recipient) is TRANSIENT and counts against the breaker every
        # client shares. What the relay says about this message (its
        # recipients, its size, its content) never does.
        try:
            connection = self._connect()
            # Recipients refused while others were accepted come back as
            # bounces through the feedback path: the message went out.
            connection.ehlo_or_helo_if_needed()
            mime, options = self._form_for(connection, email)
            if connection.has_extn("pipelining"):
                refused = _send_pipelined(connection, email, mime, options)
            else:
                refused = connection.sendmail(
                    email.mail_from, email.envelope_recipients, mime, mail_options=options
                )
        except ProviderError:
            raise
        except smtplib.SMTPRecipientsRefused as error:
            self._drop_connection()
            failure = _classified(error.recipients, self.name)
            # Issue 16: a 5xx at RCPT is a bounce, the same as one mailed back.
            failure.feedback = rcpt_bounces(email, error.recipients)
            raise failure from error
        except smtplib.SMTPAuthenticationError as error:
            self._drop_connection()
            raise ProviderError(
                self.name, FailureKind.CONFIG, f"authentication failed: {error}"
            ) from error
        except smtplib.SMTPNotSupportedError as error:
            # The relay offers no STARTTLS or AUTH although we are set up to
            # use them: ours to fix, not the message's.
            self._drop_connection()
            raise ProviderError(
                self.name, FailureKind.CONFIG, f"relay does not support it: {error}"
            ) from error
        except ssl.SSLCertVerificationError as error:
            self._drop_connection()
            raise ProviderError(
                self.name, FailureKind.CONFIG, f"TLS certificate refused: {error}"
            ) from error
        except smtplib.SMTPConnectError as error:
            # Refused at the greeting: 421 is "busy, come back"; a 5xx means
            # this relay will not serve us at all (an IP not allowed...).
            self._drop_connection()
            kind = FailureKind.TRANSIENT if 400 <= error.smtp_code < 500 else FailureKind.CONFIG
            raise ProviderError(
                self.name, kind, f"refused at connect: {error.smtp_code} {error.smtp_error!r}"
            ) from error
        except smtplib.SMTPSenderRefused as error:
            self._drop_connection()
            raise ProviderError(
                self.name,
                _sender_refusal_kind(error.smtp_code),
                f"sender refused: {error.smtp_code} {error.smtp_error!r}",
            ) from error
        except smtplib.SMTPDataError as error:
            self._drop_connection()
            raise ProviderError(
                self.name,
                _data_refusal_kind(error.smtp_code),
                f"message refused: {error.smtp_code} {error.smtp_error!r}",
            ) from error
        except smtplib.SMTPResponseException as error:
            # EHLO, STARTTLS, NOOP: the session itself, before any message.
            self._drop_connection()
            kind = FailureKind.TRANSIENT if 400 <= error.smtp_code < 500 else FailureKind.CONFIG
            raise ProviderError(
                self.name, kind, f"{error.smtp_code} {error.smtp_error!r}"
            ) from error
        except (smtplib.SMTPException, OSError) as error:
            # Connection refused or reset, timeouts, TLS failures, server gone.
            self._drop_connection()
            raise ProviderError(
                self.name, FailureKind.TRANSIENT, f"connection failed: {error}"
            ) from error
        except (UnicodeError, ValueError) as error:
            # The message cannot be put on the wire as it is (an address that
            # will not encode, a line break in the envelope); raised before a
            # byte was written, but the session is dropped to be sure.
            self._drop_connection()
            raise ProviderError(
                self.name, FailureKind.PERMANENT, f"the message cannot be sent: {error}"
            ) from error
        if not self._reuse:
            self.close()
        else:
            self._last_used = time.monotonic()
        # SMTP hands back no id of its own that later events could be matched
        # by, so the Message-ID we wrote is the provider message id.
        return ProviderReceipt(
            provider=self.name,
            provider_msg_id=email.message_id.strip("<>"),
            # Recipients refused while others were accepted: bounces at once.
            feedback=rcpt_bounces(email, refused),
        )

    def _form_for(self, connection: smtplib.SMTP, email: OutgoingEmail) -> tuple[bytes, list[str]]:
        """The MIME and MAIL options for this relay: SMTPUTF8 where offered and useful."""
        if email.mime_utf8 is None and not email.requires_smtputf8:
            return email.mime, []  # ASCII mail: the common case
        if connection.has_extn("smtputf8"):
            # RFC 6531: the parameter announces UTF-8 in the envelope and the
            # headers (RFC 6532); 8BITMIME, which it implies, is named where
            # offered, for relays that look for it.
            options = ["SMTPUTF8"]
            if connection.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            return email.mime_utf8 or email.mime, options
        if email.requires_smtputf8:
            raise ProviderError(
                self.name,
                FailureKind.PERMANENT,
                "an address has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531), "
                "and the relay does not offer it",
            )
        return email.mime, []

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._connection.quit()
            self._connection = None

    def _connect(self) -> smtplib.SMTP:
        if self._connection is not None:
            # Kept across batches: connecting, EHLO and QUIT per batch of ten
            # were ~5% of the worker's time (issue 8). Back to back the
            # connection is alive: skip the NOOP round trip. Should the relay
            # have dropped it anyway, the send fails as transient before any
            # DATA and is retried.
            idle = time.monotonic() - self._last_used
            if idle < NOOP_AFTER_IDLE_SECONDS:
                return self._connection
            if idle < REPLACE_AFTER_IDLE_SECONDS:
                try:
                    if self._connection.noop()[0] == 250:
                        self._last_used = time.monotonic()
                        return self._connection
                except (smtplib.SMTPException, OSError):
                    pass
            self._drop_connection()
        connection: smtplib.SMTP
        if self._security == "tls":
            connection = smtplib.SMTP_SSL(
                self._host, self._port, timeout=self._timeout, context=self._tls_context()
            )
        else:
            connection = smtplib.SMTP(
                self._host,
                self._port,
                timeout=self._timeout,
                local_hostname=socket.gethostname(),
            )
            if self._security == "starttls":
                connection.starttls(context=self._tls_context())
                connection.ehlo()
        if self._username:
            connection.login(self._username, self._password or "")
        self._connection = connection
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        # Loading the CA bundle costs ~40 ms: once per provider (per container),
        # not per connection, and never for a plain-text relay.
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection.close()
            self._connection = None


def _classified(recipients: dict[str, tuple[int, bytes]], provider: str) -> ProviderError:
    """Every recipient refused: the message's problem, never the relay's health.

    A 5xx for any of them is final; 4xx for all (greylisting, a full mailbox)
    is DEFERRED: the same message later, through the same relay. Only 421
    ("closing the channel") speaks of the relay itself.
    """
    codes = [code for code, _ in recipients.values()]
    if 421 in codes:
        kind = FailureKind.TRANSIENT
    elif all(400 <= code < 500 for code in codes):
        kind = FailureKind.DEFERRED
    else:
        kind = FailureKind.PERMANENT
    detail = "; ".join(
        f"{address}: {code} {text.decode(errors='replace')}"
        for address, (code, text) in recipients.items()
    )
    return ProviderError(provider, kind, f"recipients refused: {detail}")


def rcpt_bounces(
    email: OutgoingEmail, refused: dict[str, tuple[int, bytes]]
) -> tuple[DeliveryEvent, ...]:
    """A 5xx at RCPT as the bounce events the feedback path applies (issue 16).

    A 4xx is not one: the relay keeps no copy, and the message is retried
    (every recipient deferred) or the recipient is simply not reached (some).
    """
    events = []
    for address, (code, text) in refused.items():
        if not 500 <= code < 600:
            continue
        reply = f"{code} {text.decode('utf-8', 'replace')}"
        policy = " 5.7." in f" {reply}"
        events.append(
            DeliveryEvent(
                provider="smtp",
                event_type=FeedbackEventType.BOUNCED,
                event_id=f"rcpt:{email.message_id.strip('<>')}",
                timestamp=datetime.now(UTC),
                message_id=email.message_id.strip("<>"),
                recipient=address,
                reject_reason=RejectReason.BLOCKED if policy else RejectReason.BOUNCED,
                mta_response=reply[:1000],
                description="refused at RCPT",
                message_id_header=email.message_id,
            )
        )
    return tuple(events)


def _sender_refusal_kind(code: int) -> FailureKind:
    # MAIL FROM: 4xx is the relay's trouble (452 out of storage, 451 local
    # error); 552 answers the SIZE we declared (the message is too large); any
    # other 5xx refuses our sender, which is configuration.
    if 400 <= code < 500:
        return FailureKind.TRANSIENT
    if code == 552:
        return FailureKind.PERMANENT
    return FailureKind.CONFIG


def _data_refusal_kind(code: int) -> FailureKind:
    # After DATA the relay has accepted the session, the sender and the
    # recipients: a refusal now is about this message's content (552 too
    # large, 554 rejected, 451 a content filter's tempfail), except 421.
    if code == 421:
        return FailureKind.TRANSIENT
    if 400 <= code < 500:
        return FailureKind.DEFERRED
    return FailureKind.PERMANENT


def _send_pipelined(
    connection: smtplib.SMTP, email: OutgoingEmail, mime: bytes, mail_options: list[str]
) -> dict[str, tuple[int, bytes]]:
    """``sendmail`` with MAIL, RCPT and DATA in one write (RFC 2920 PIPELINING).

    smtplib waits for each command's reply: four round trips per message
    where two do (issue 8: SMTP waits were a quarter of the worker's time).
    Raises what ``sendmail`` raises, for the same replies, and returns the
    recipients refused while others were accepted.
    """
    options = f" SIZE={len(mime)}" if connection.has_extn("size") else ""
    options += "".join(f" {option}" for option in mail_options)
    commands = [f"MAIL FROM:{_envelope(email.mail_from)}{options}"]
    commands += [f"RCPT TO:{_envelope(rcpt)}" for rcpt in email.envelope_recipients]
    commands.append("DATA")
    if any("\r" in command or "\n" in command for command in commands):
        raise ValueError("an envelope address holds a line break")
    # UTF-8 only under SMTPUTF8; otherwise ASCII, and a non-ASCII address
    # raises UnicodeEncodeError here, before a byte is written.
    encoding = "utf-8" if "SMTPUTF8" in mail_options else "ascii"
    connection.send("".join(f"{command}\r\n" for command in commands).encode(encoding))
    # Every reply is read, whatever came before, so that the next command
    # on this connection is not answered by a stale one.
    mail_code, mail_reply = connection.getreply()
    refused: dict[str, tuple[int, bytes]] = {}
    for recipient in email.envelope_recipients:
        code, reply = connection.getreply()
        if code not in (250, 251):
            refused[recipient] = (code, reply)
    data_code, data_reply = connection.getreply()
    failure: smtplib.SMTPException | None = None
    if mail_code != 250:
        failure = smtplib.SMTPSenderRefused(mail_code, mail_reply, email.mail_from)
    elif len(refused) == len(email.envelope_recipients):
        failure = smtplib.SMTPRecipientsRefused(refused)
    elif data_code != 354:
        failure = smtplib.SMTPDataError(data_code, data_reply)
    if failure is not None:
        if data_code == 354:
            # A relay that let DATA through anyway gets an empty body, which
            # it must refuse: no transaction is open for it to deliver.
            connection.send(b".\r\n")
            connection.getreply()
        raise failure
    body = dot_stuffed(mime)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    connection.send(body + b".\r\n")
    code, reply = connection.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)
    return refused


def dot_stuffed(data: bytes) -> bytes:
    """Each line starting with "." gets a second one (RFC 5321 4.5.2).

    What ``re.sub(rb"(?m)^\\.", b"..", data)`` does (a line starts at the
    beginning and after every LF), with bytes.replace: the regex tried every
    position, ~170 µs for a 16 KB message, ten times the replace.
    """
    stuffed = data.replace(b"\n.", b"\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def _envelope(address: str) -> str:
    # smtplib.quoteaddr parses with the stdlib address parser (~0.3 ms per
    # address); the addresses build_mime hands over are bare already.
    return f"<{address}>" if is_plain_address(address) else smtplib.quoteaddr(address)
