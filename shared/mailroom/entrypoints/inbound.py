"""What comes back from recipients: bounce mail (SES → S3 → this function) and /u/{token}.

The inbound function serves both. SES receives mail for the bounce domains,
stores each message in S3 (the receipt rule's S3 action) and invokes the
function (its Lambda action) with the receipt: the envelope recipients and
the object's key. The handler reads the raw mail from S3 and hands it to
services/inbound.py. In the local runner an SMTP listener plays SES and S3
(devstack/inbound_smtp.py) and calls :func:`process_raw_mail` directly.

``POST /u/{token}`` is RFC 8058's one-click unsubscribe: any body, no
credentials, 200 with an empty body, no redirect, no cookie. ``GET /u/{token}``
shows a page with a button, because mail scanners fetch every GET link and
must not unsubscribe anyone. A forged token is 404 and writes nothing.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path

from mailroom.bootstrap import Services
from mailroom.domain.errors import UnsubscribeLinkNotFound
from mailroom.domain.return_path import verify_unsubscribe_token
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import text_answers
from mailroom.services import unsubscribe
from mailroom.services.inbound import InboundResult, receive_inbound_mail

ServicesProvider = Callable[[], Services]
# Any body, any media type (mail clients post application/x-www-form-urlencoded
# "List-Unsubscribe=One-Click", RFC 8058 section 3.2); it is not read.
UNSUBSCRIBE_BODY: dict[str, Any] = {
    "required": False,
    "description": "Anything (RFC 8058 clients send `List-Unsubscribe=One-Click`); not read.",
    "content": {
        "application/x-www-form-urlencoded": {"schema": {"type": "string"}},
        "text/plain": {"schema": {"type": "string"}},
    },
}


def is_ses_receipt_event(event: Mapping[str, Any]) -> bool:
    """True for the event an SES receipt rule's Lambda action sends."""
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, Mapping) and r.get("eventSource") == "aws:ses" for r in records)
    )


def process_raw_mail(
    raw: bytes, envelope_recipients: Sequence[str], services: Services
) -> InboundResult:
    result = receive_inbound_mail(services.uow(), raw, envelope_recipients, services.inbound_policy)
    logger.info(
        "inbound mail processed",
        extra={
            "outcome": result.outcome,
            "kind": result.kind,
            "message_id": result.message_id,
            "applied": result.applied,
            "duplicate": result.duplicate,
        },
    )
    return result


def process_ses_event(
    event: Mapping[str, Any], services: Services, read_object: Callable[[str, str], bytes]
) -> dict[str, Any]:
    """Each receipt's mail, read from S3 (``read_object(bucket, key)``) and processed.

    Our own failures (S3 or the database down) raise: SES invoked the
    function asynchronously, so Lambda retries, and a redelivered mail is
    recorded once (services/inbound.py).
    """
    outcomes: dict[str, int] = {}
    settings = services.settings
    for record in event["Records"]:
        ses = record.get("ses") or {}
        mail = ses.get("mail") or {}
        receipt = ses.get("receipt") or {}
        message_id = str(mail.get("messageId") or "")
        recipients = [str(r) for r in receipt.get("recipients") or mail.get("destination") or []]
        action = receipt.get("action") or {}
        # An S3 action's receipt names the object; a Lambda action's does not,
        # and the rule's S3 action stored it under prefix + SES message id.
        bucket = str(action.get("bucketName") or settings.inbound_bucket)
        key = str(action.get("objectKey") or f"{settings.inbound_prefix}{message_id}")
        if not bucket or not message_id:
            logger.warning("SES receipt without a stored message", extra={"ses_id": message_id})
            outcomes["skipped"] = outcomes.get("skipped", 0) + 1
            continue
        result = process_raw_mail(read_object(bucket, key), recipients, services)
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    return outcomes


def unsubscribe_routes(services: ServicesProvider) -> Router:
    router = Router()

    @router.post(
        "/u/<token>",
        summary="One-click unsubscribe (RFC 8058)",
        description=(
            "What a mail client posts when its reader unsubscribes from a bulk message "
            "(`List-Unsubscribe-Post: List-Unsubscribe=One-Click`). Any body; no "
            "credentials: the token is an HMAC only Mailroom can make, for one message. "
            "Suppresses the message's recipient for its client (reason `unsubscribe`) "
            "and records an `unsubscribed` event. Idempotent."
        ),
        responses=text_answers(
            200,
            "Unsubscribed: an empty body",
            ("text/plain",),
            errors={
                404: "unsubscribe_link_not_found: a forged or unknown token",
                413: "payload_too_large: a body larger than MAX_REQUEST_BYTES",
            },
        ),
        tags=["unsubscribe"],
        openapi_extensions={"requestBody": UNSUBSCRIBE_BODY},
    )
    def one_click(token: Annotated[str, Path(max_length=80)]) -> Response[str]:
        active = services()
        keyring = active.settings.bounce_keyring
        summary = unsubscribe.unsubscribe(active.uow(), keyring, token, via="post")
        logger.info("unsubscribed", extra={"applied": summary.applied, "via": "post"})
        return Response(status_code=200, content_type=content_types.TEXT_PLAIN, body="")

    @router.get(
        "/u/<token>",
        summary="The unsubscribe page: a button that posts to the same URL",
        description=(
            "Shown when a person opens the link. Fetching it changes nothing (mail "
            "scanners fetch every link); the button posts to `/u/{token}`."
        ),
        responses=text_answers(
            200,
            "A small HTML page",
            ("text/html",),
            errors={404: "unsubscribe_link_not_found: a forged or unknown token"},
        ),
        tags=["unsubscribe"],
    )
    def confirmation_page(token: Annotated[str, Path(max_length=80)]) -> Response[str]:
        active = services()
        keyring = active.settings.bounce_keyring
        if keyring is None or verify_unsubscribe_token(keyring, token) is None:
            raise UnsubscribeLinkNotFound("no such unsubscribe link")
        return Response(
            status_code=200,
            content_type="text/html; charset=utf-8",
            body=_PAGE.format(action=html.escape(f"/u/{token}", quote=True)),
            headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"},
        )

    return router


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto; padding: 0 1em">
<h1 style="font-size: 1.4em">Unsubscribe</h1>
<p>Stop receiving these emails at this address?</p>
<form method="post" action="{action}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit" style="font-size: 1em; padding: .5em 1.2em">Unsubscribe</button>
</form>
</body></html>
"""


def inbound_function_routes(services: ServicesProvider) -> list[Router]:
    return [unsubscribe_routes(services)]
