"""Real network peers that stand in for the email providers, on 127.0.0.1.

* ``SwitchableSmtp``: aiosmtpd whose answer the test switches (accept, 421
  "down", 535 for bad credentials), counting every MAIL command it is sent.
* ``SilentServer``: accepts TCP connections and never answers: a timeout.
* ``SendGridDouble`` and ``MailgunDouble``: HTTP servers speaking those APIs'
  request and response formats.

The formats were checked against the providers' published references:

SendGrid v3 Mail Send
  request  https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
           (POST /v3/mail/send, Bearer API key, JSON with personalizations[].to/cc/bcc,
           from, subject, content[] with text/plain before text/html, headers,
           custom_args, reply_to_list)
  answers  https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/responses
           (202 accepted; 400 bad request; 401 bad key; 403 "The from address does
           not match a verified Sender Identity"; 413; 429; 5xx),
           https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors
           (error body {"errors": [{"message", "field", "help"}]}),
           https://www.twilio.com/docs/sendgrid/glossary/x-message-id (the id is
           the X-Message-Id response header; the 202 has no body)
Mailgun messages API, MIME form
  request  https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages/post-v3--domain-name--messages-mime
           (POST /v3/{domain_name}/messages.mime, basic auth api:<key>,
           multipart/form-data with `to` and the MIME as the `message` file)
  answers  https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses
           (400 with {"message"}; 401/403 auth; 404 unknown domain; 429; 500), and a
           success is 200 {"id": "<...@domain>", "message": "Queued. Thank you."}
           (the documented example answer).
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.integration.conftest import SinkHandler, free_port

# --- SMTP -------------------------------------------------------------------


@dataclass
class SwitchableHandler(SinkHandler):
    """The conftest sink, plus a mode the test sets: "accept" or "down" (421 at MAIL)."""

    mode: str = "accept"
    mail_commands: int = 0

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.mail_commands += 1
        if self.mode == "down":
            return "421 4.3.2 Service not available, closing transmission channel"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


class SwitchableSmtp:
    """aiosmtpd on a loopback port; ``credentials`` turns AUTH on (and requires it)."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.handler = SwitchableHandler()
        self.host = "127.0.0.1"
        self.port = free_port()
        self._credentials = credentials
        kwargs: dict[str, Any] = {}
        if credentials is not None:
            kwargs = {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": False,  # loopback only
            }
        self._controller = Controller(self.handler, hostname=self.host, port=self.port, **kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        valid = (
            isinstance(data, LoginPassword)
            and (
                data.login.decode(),
                data.password.decode(),
            )
            == self._credentials
        )
        return AuthResult(success=valid, handled=False)

    @property
    def mode(self) -> str:
        return self.handler.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.handler.mode = value

    @property
    def mail_commands(self) -> int:
        return self.handler.mail_commands

    @property
    def received(self) -> list[Any]:
        return self.handler.received

    def start(self) -> SwitchableSmtp:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class SilentServer:
    """Listens, and lets the kernel complete connections, but never says a word.

    Nothing reads or writes: a client waiting for a greeting or an HTTP answer
    times out after exactly its own timeout, with no sleeping on our side.
    """

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.port = int(self._socket.getsockname()[1])

    def stop(self) -> None:
        self._socket.close()


# --- HTTP providers ---------------------------------------------------------


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    # The client's source port: one port for many requests is a reused connection.
    client_port: int = 0
    # SendGrid: the JSON body. Mailgun: the form fields (the file as bytes).
    parsed: Any = None


@dataclass
class HttpDouble:
    """An HTTP server on 127.0.0.1 in a thread; subclasses answer one API."""

    mode: str = "accept"  # or: throttle, down, hang
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        double = self
        self._release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as the real APIs offer: clients may reuse a connection.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = RecordedRequest(self.path, headers, body, self.client_address[1])
                double.requests.append(recorded)
                if double.mode == "hang":
                    # Held until the test ends; the client's timeout fires first.
                    double._release.wait()
                    return
                status, answer_headers, answer = double.answer(recorded)
                self.send_response(status)
                for name, value in answer_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet test output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll so stop() returns at once rather than after 0.5 s.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> HttpDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def answer(self, request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError


def _json(status: int, body: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


@dataclass
class SendGridDouble(HttpDouble):
    api_key: str = "SG.test-key"
    verified_senders: set[str] = field(default_factory=lambda: {"noreply@acme.example.com"})

    def answer(self, request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        def errors(
            status: int, message: str, field_name: str | None = None
        ) -> tuple[int, dict[str, str], bytes]:
            return _json(
                status, {"errors": [{"message": message, "field": field_name, "help": None}]}
            )

        if request.path != "/v3/mail/send":
            return errors(404, "not found")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return errors(401, "The provided authorization grant is invalid, expired, or revoked")
        if self.mode == "throttle":
            return errors(429, "Too many requests")
        if self.mode == "down":
            return errors(503, "The SendGrid v3 Web API is not available.")
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return errors(415, "Content-Type should be application/json.")
        try:
            mail = json.loads(request.body)
        except ValueError:
            return errors(400, "Bad Request", "body")
        request.parsed = mail
        problem = _sendgrid_problem(mail)
        if problem is not None:
            return errors(400, problem[1], problem[0])
        if mail["from"]["email"] not in self.verified_senders:
            return errors(
                403,
                "The from address does not match a verified Sender Identity. Mail cannot be "
                "sent until this error is resolved.",
                "from",
            )
        return 202, {"X-Message-Id": secrets.token_urlsafe(16)}, b""


def _sendgrid_problem(mail: Any) -> tuple[str, str] | None:
    """The (field, message) of the first rule the body breaks, as SendGrid words them."""
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return "personalizations", "You must have at least one personalization."
    for personalization in personalizations:
        if not personalization.get("to"):
            return "personalizations.0.to", "The to array is required for all personalizations"
        seen: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            for recipient in personalization.get(kind, []):
                address = str(recipient.get("email", "")).lower()
                if "@" not in address:
                    return f"personalizations.0.{kind}", "Does not contain a valid address."
                if address in seen:
                    return (
                        "personalizations.0",
                        "Each email address in the personalization block should be unique",
                    )
                seen.add(address)
    if "@" not in str(mail.get("from", {}).get("email", "")):
        return "from.email", "The from email does not contain a valid address."
    if not mail.get("subject"):
        return "subject", "The subject is required."
    content = mail.get("content") or []
    types = [part.get("type") for part in content]
    if not content or any(not part.get("value") for part in content):
        return "content", "The content value must be a string at least one character in length."
    if "text/plain" in types and types.index("text/plain") != 0:
        return "content", "If present, text/plain must be first, followed by text/html"
    return None


@dataclass
class MailgunDouble(HttpDouble):
    api_key: str = "key-test"
    domain: str = "mg.acme.example.com"

    def answer(self, request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        expected_auth = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if request.headers.get("authorization") != expected_auth:
            return 401, {"Content-Type": "text/plain"}, b"Forbidden"
        prefix, _, rest = request.path.partition("/v3/")
        domain, _, endpoint = rest.partition("/")
        if prefix or endpoint != "messages.mime":
            return _json(404, {"message": "not found"})
        if domain != self.domain:
            return _json(404, {"message": f"Domain not found: {domain}"})
        if self.mode == "throttle":
            return _json(429, {"message": "Too many requests"})
        if self.mode == "down":
            return _json(500, {"message": "Internal Server Error"})
        fields = _form_fields(request.headers.get("content-type", ""), request.body)
        request.parsed = fields
        if not fields.get("to"):
            return _json(400, {"message": "'to' parameter is missing"})
        if not fields.get("message"):
            return _json(400, {"message": "'message' parameter is missing"})
        message = BytesParser(policy=policy.default).parsebytes(fields["message"][0])
        message_id = str(message.get("Message-ID") or f"<{secrets.token_hex(8)}@{domain}>")
        return _json(200, {"id": message_id, "message": "Queued. Thank you."})


def _form_fields(content_type: str, body: bytes) -> dict[str, list[Any]]:
    """multipart/form-data as {name: [values]}, files as their exact bytes.

    Split by hand on the boundary: the email parser would parse a
    message/rfc822 file part into a message and lose its exact bytes.
    """
    kind, _, params = content_type.partition(";")
    if kind.strip() != "multipart/form-data" or "boundary=" not in params:
        return {}
    boundary = params.split("boundary=", 1)[1].strip().strip('"').encode()
    fields: dict[str, list[Any]] = {}
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = BytesParser(policy=policy.HTTP).parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        is_file = headers.get_param("filename", header="content-disposition") is not None
        fields.setdefault(str(name), []).append(content if is_file else content.decode())
    return fields


def running(double: HttpDouble) -> Iterator[HttpDouble]:
    double.start()
    try:
        yield double
    finally:
        double.stop()
