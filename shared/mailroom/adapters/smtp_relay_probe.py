"""Trying a client's SMTP relay step by step: connect, EHLO, STARTTLS, AUTH (issue 20).

What ``POST /v1/smtp-configs/{id}/test`` reports: each step's outcome, and
the first that failed. No message is sent. The password is handed to
smtplib only; no step's detail repeats it (smtplib's own errors quote the
server's reply, never the credentials).
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
from dataclasses import dataclass

from mailroom.domain.smtp_configs import is_internal_address


@dataclass(frozen=True, slots=True)
class ProbeStep:
    step: str  # connect, ehlo, starttls, auth
    ok: bool
    detail: str


def probe_relay(
    host: str,
    port: int,
    *,
    security: str,
    username: str | None,
    password: str | None,
    timeout_seconds: float,
    tls_context: ssl.SSLContext | None = None,
    allow_internal: bool = False,
) -> list[ProbeStep]:
    """Each step tried, in order, up to the first that fails."""
    steps: list[ProbeStep] = []
    if not allow_internal:
        refusal = internal_host_refusal(host, port)
        if refusal is not None:
            steps.append(ProbeStep("connect", False, refusal))
            return steps
    context = tls_context or ssl.create_default_context()
    connection: smtplib.SMTP | None = None
    try:
        try:
            if security == "tls":
                connection = smtplib.SMTP_SSL(host, port, timeout=timeout_seconds, context=context)
            else:
                connection = smtplib.SMTP(
                    host, port, timeout=timeout_seconds, local_hostname=socket.gethostname()
                )
        except smtplib.SMTPConnectError as error:
            steps.append(ProbeStep("connect", False, f"refused: {_reply(error)}"))
            return steps
        except (OSError, smtplib.SMTPException) as error:
            steps.append(ProbeStep("connect", False, f"cannot connect: {_plain(error)}"))
            return steps
        steps.append(ProbeStep("connect", True, f"connected to {host}:{port}"))
        if not _step(steps, "ehlo", lambda: _ehlo(connection)):
            return steps
        if security == "starttls":
            if not connection.has_extn("starttls"):
                steps.append(ProbeStep("starttls", False, "the server does not offer STARTTLS"))
                return steps
            if not _step(steps, "starttls", lambda: _starttls(connection, context)):
                return steps
        if username:
            if not connection.has_extn("auth"):
                steps.append(ProbeStep("auth", False, "the server does not offer AUTH"))
                return steps
            _step(steps, "auth", lambda: _login(connection, username, password or ""))
        return steps
    finally:
        if connection is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()


def internal_host_refusal(host: str, port: int) -> str | None:
    """Why ``host`` may not be connected to (it resolves to an internal address), or None.

    Checked just before connecting; smtplib resolves the name again, so a DNS
    answer that changes in between is not caught (the TLS name check still
    applies for starttls/tls relays).
    """
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        return f"cannot resolve {host}: {error}"
    internal = sorted({str(a[4][0]) for a in answers if is_internal_address(str(a[4][0]))})
    if internal:
        return (
            f"{host} resolves to an internal address ({', '.join(internal)}); "
            "relays must be on the public internet"
        )
    return None


def _step(steps: list[ProbeStep], name: str, action: object) -> bool:
    assert callable(action)
    try:
        detail = action()
    except smtplib.SMTPResponseException as error:
        steps.append(ProbeStep(name, False, _reply(error)))
        return False
    except (smtplib.SMTPException, OSError) as error:
        steps.append(ProbeStep(name, False, _plain(error)))
        return False
    steps.append(ProbeStep(name, True, str(detail)))
    return True


def _ehlo(connection: smtplib.SMTP) -> str:
    code, reply = connection.ehlo()
    if code != 250:
        raise smtplib.SMTPHeloError(code, reply)
    offered = sorted(connection.esmtp_features)
    return f"offers {', '.join(offered)}" if offered else "no extensions offered"


def _starttls(connection: smtplib.SMTP, context: ssl.SSLContext) -> str:
    connection.starttls(context=context)
    connection.ehlo()
    return "TLS established"


def _login(connection: smtplib.SMTP, username: str, password: str) -> str:
    connection.login(username, password)
    return "authenticated"


def _reply(error: smtplib.SMTPResponseException) -> str:
    text = error.smtp_error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{error.smtp_code} {text}"


def _plain(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
