"""The tracking function: ``GET /t/{token}.gif`` (the pixel) and ``GET /c/{token}`` (a link).

No credentials: the random token is the only thing a request brings, and a
redirect goes where the token's stored row says (services/tracking.py). The
pixel answers the same 1×1 GIF whatever happens (unknown token, database
down, flood), with ``Cache-Control: no-store`` so every open is fetched.

A hit is queued, not written (issue 21 item 3): one Redis round trip; the
tracking consumer (entrypoints/tracking_ingest.py) writes hits in batches.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailroom.bootstrap import Services
from mailroom.domain.errors import TrackingLinkNotFound
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import text_answers
from mailroom.entrypoints.webhooks import create_webhooks_api
from mailroom.services import tracking

ServicesProvider = Callable[[], Services]
# The smallest transparent GIF: 1×1, one transparent colour (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, max-age=0", "X-Robots-Tag": "noindex"}


def pixel_response() -> dict[str, Any]:
    """The pixel as a Lambda proxy response, built without any dependency."""
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "image/gif", **NO_STORE},
        "body": base64.b64encode(PIXEL).decode("ascii"),
        "isBase64Encoded": True,
    }


def visitor_of(event: Mapping[str, Any]) -> tracking.Visitor:
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    context = event.get("requestContext") or {}
    identity = context.get("identity") or {}
    # API Gateway's own view of the caller; X-Forwarded-For is the caller's word.
    return tracking.Visitor.of(headers.get("user-agent"), identity.get("sourceIp"))


def tracking_routes(services: ServicesProvider) -> Router:
    router = Router()

    @router.get(
        "/t/<file>",
        summary="The open-tracking pixel",
        description=(
            "`/t/{token}.gif`, the 1×1 image a tracked message carries. Always a GIF with "
            "`Cache-Control: no-store`, even for an unknown token or when recording fails; "
            "a known token's fetch is recorded as an `opened` event (with `machine`)."
        ),
        responses=text_answers(
            200,
            "A 1×1 transparent GIF",
            ("image/gif",),
            headers={"Cache-Control": "no-store"},
        ),
        tags=["tracking"],
    )
    def pixel(file: Annotated[str, Path(max_length=200)]) -> Response[str]:
        token = file.removesuffix(".gif")
        services().hit_recorder.record_open(token, visitor_of(router.current_event.raw_event))
        # The GIF's bytes are put in by ``handle``: Powertools' response
        # validation would try to read a bytes body as UTF-8 and fail.
        return Response(status_code=200, content_type="image/gif", body="", headers=NO_STORE)

    @router.get(
        "/c/<token>",
        summary="A tracked link: a redirect to the link's stored URL",
        description=(
            "302 to the URL the link had in the message, read from the token's stored "
            "row (never from the request), recording a `clicked` event (with `machine`). "
            "An unknown or altered token is 404 and nothing is recorded."
        ),
        responses={
            **text_answers(
                302,
                "To the link's URL (Location)",
                ("text/plain",),
                headers={"Location": "The link's URL", "Cache-Control": "no-store"},
                errors={
                    404: "tracking_link_not_found: an unknown or altered token",
                    503: "service_unavailable: the database is unreachable; retry",
                },
            ),
            200: {
                "description": "A link no person can see (a scanner's): an empty page",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        },
        tags=["tracking"],
    )
    def click(token: Annotated[str, Path(max_length=200)]) -> Response[str]:
        answer = services().hit_recorder.record_click(
            token, visitor_of(router.current_event.raw_event)
        )
        if answer is None:
            raise TrackingLinkNotFound("no such tracked link")
        if answer.url is None:
            return Response(
                status_code=200, content_type=content_types.TEXT_PLAIN, body="", headers=NO_STORE
            )
        return Response(
            status_code=302,
            content_type=content_types.TEXT_PLAIN,
            body="",
            headers={"Location": answer.url, "Referrer-Policy": "no-referrer", **NO_STORE},
        )

    return router


def tracking_function_routes(services: ServicesProvider) -> list[Router]:
    return [tracking_routes(services)]


def create_tracking_api(services: ServicesProvider) -> Any:
    # The webhooks resolver: no client gate (the routes are public), any media type.
    return create_webhooks_api(tracking_function_routes(services), max_request_bytes=lambda: 4096)


def handle(app: Any, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Resolve the request; on the pixel's path the answer is always the GIF.

    Whatever the route answered (a 200 after recording, a 422 for a token too
    long) or raised, a GET of the pixel gets the same 1×1 image.
    """
    method = event.get("httpMethod")
    is_pixel = str(event.get("resource") or "").startswith("/t/") and method in ("GET", "HEAD")
    try:
        answer: dict[str, Any] = dict(app.resolve(event, context))
    except Exception:
        if not is_pixel:
            raise
        logger.exception("the pixel's handler failed; answering the GIF")
    else:
        if not is_pixel:
            return answer
    return pixel_response()
