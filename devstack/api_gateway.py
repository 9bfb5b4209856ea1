"""API Gateway (REST API, Lambda proxy integration) in front of the local functions.

Each HTTP request becomes the v1 proxy event API Gateway would send, and the
handler's answer becomes the HTTP response API Gateway would give. Routes are
served at the root, as on a custom domain or under ``sam local start-api``:
the stage is in the event but not in the URL.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from devstack.lambda_runtime import LocalFunction
from devstack.template import LOCAL_ACCOUNT_ID, ApiRoute

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# API Gateway's quota "Total combined size of request line and header values":
# 10240 bytes, not adjustable. Past it the gateway answers with its
# REQUEST_TOO_LARGE response (413 by default; template.yaml gives it
# Mailroom's error shape) and the function never runs.
MAX_REQUEST_LINE_AND_HEADERS_BYTES = 10240
LOCAL_API_ID = "devstack"
_GREEDY = re.compile(r"^\{([A-Za-z0-9_.-]+)\+\}$")
_PARAMETER = re.compile(r"^\{([A-Za-z0-9_.-]+)\}$")


@dataclass(frozen=True, slots=True)
class RouteTarget:
    route: ApiRoute
    function: LocalFunction


@dataclass(frozen=True, slots=True)
class _Resource:
    """One resource path of the API and the methods defined on it."""

    path: str
    segments: tuple[str, ...]
    methods: dict[str, RouteTarget]

    @property
    def specificity(self) -> tuple[int, ...]:
        # API Gateway prefers a literal segment to {param}, and {param} to
        # {proxy+}, comparing from the left.
        return tuple(
            2 if _GREEDY.match(segment) else 1 if _PARAMETER.match(segment) else 0
            for segment in self.segments
        )

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        parameters: dict[str, str] = {}
        for index, pattern in enumerate(self.segments):
            greedy = _GREEDY.match(pattern)
            if greedy:
                rest = segments[index:]
                if not rest:
                    return None
                parameters[greedy.group(1)] = "/".join(rest)
                return parameters
            if index >= len(segments):
                return None
            parameter = _PARAMETER.match(pattern)
            if parameter:
                parameters[parameter.group(1)] = segments[index]
            elif pattern != segments[index]:
                return None
        return parameters if len(segments) == len(self.segments) else None


def request_line_and_headers_size(request: Request) -> int:
    """Bytes of the request line plus every header's name and value, as sent."""
    uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path
    protocol = request.environ.get("SERVER_PROTOCOL", "HTTP/1.1")
    line = f"{request.method} {uri} {protocol}"
    headers = sum(len(name) + len(value) for name, value in request.headers.items())
    return len(line.encode("latin-1", "replace")) + headers


def _segments(path: str) -> tuple[str, ...]:
    return tuple(segment for segment in path.strip("/").split("/") if segment)


class GatewayRequest(Request):
    # API Gateway refuses larger payloads before the integration runs.
    max_content_length = MAX_PAYLOAD_BYTES


class RestApiGateway:
    """A WSGI application that routes requests to functions as API Gateway does."""

    def __init__(self, targets: Iterable[RouteTarget], *, stage: str) -> None:
        resources: dict[str, _Resource] = {}
        for target in targets:
            path = "/" + "/".join(_segments(target.route.path))
            resource = resources.setdefault(path, _Resource(path, _segments(path), {}))
            resource.methods[target.route.method] = target
        self._resources = sorted(resources.values(), key=lambda resource: resource.specificity)
        self._stage = stage

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = GatewayRequest(environ)
        started = time.perf_counter()
        response, served_by = self._dispatch(request)
        log.info(
            "%s %s -> %s %s(%.0f ms)",
            request.method,
            request.full_path.rstrip("?"),
            response.status_code,
            f"{served_by} " if served_by else "",
            (time.perf_counter() - started) * 1000,
        )
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> tuple[Response, str | None]:
        size = request_line_and_headers_size(request)
        if size > MAX_REQUEST_LINE_AND_HEADERS_BYTES:
            return gateway_error(
                413,
                "request_too_large",
                f"the request line and headers are {size} bytes, over "
                f"{MAX_REQUEST_LINE_AND_HEADERS_BYTES}",
            ), None
        found = self._find(request.method, request.path)
        if found is None:
            return gateway_error(
                404, "route_not_found", f"no route for {request.method} {request.path}"
            ), None
        target, resource, parameters = found
        try:
            event = self.proxy_event(request, resource.path, parameters)
        except RequestEntityTooLarge:
            return gateway_error(
                413, "request_too_large", f"the request body is over {MAX_PAYLOAD_BYTES} bytes"
            ), None
        try:
            invocation = target.function.invoke(event)
        except Exception:
            # Lambda reports the error and API Gateway answers 502.
            log.exception("%s raised", target.function.name)
            return gateway_error(
                502, "internal_error", "the function failed; the runner's log has the trace"
            ), target.function.name
        try:
            response = proxy_response(invocation.result)
        except MalformedProxyResponse as error:
            log.error("%s returned a malformed proxy response: %s", target.function.name, error)
            return gateway_error(
                502, "internal_error", "the function returned a malformed response"
            ), target.function.name
        response.headers["x-amzn-RequestId"] = event["requestContext"]["requestId"]
        return response, target.function.name

    def _find(self, method: str, path: str) -> tuple[RouteTarget, _Resource, dict[str, str]] | None:
        segments = _segments(path)
        for resource in self._resources:
            parameters = resource.match(segments)
            if parameters is None:
                continue
            # The most specific matching resource decides; API Gateway does not
            # fall back to a broader one when the method is missing.
            target = resource.methods.get(method.upper()) or resource.methods.get("ANY")
            return (target, resource, parameters) if target else None
        return None

    def proxy_event(
        self, request: Request, resource_path: str, path_parameters: dict[str, str]
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        request_id = str(uuid.uuid4())
        source_ip = request.remote_addr or "127.0.0.1"
        headers = Headers(request.headers)
        # TracingEnabled APIs pass an X-Ray trace header to the integration.
        if "X-Amzn-Trace-Id" not in headers:
            headers["X-Amzn-Trace-Id"] = (
                f"Root=1-{int(now.timestamp()):08x}-{uuid.uuid4().hex[:24]}"
            )
        headers.setdefault("X-Forwarded-For", source_ip)
        headers.setdefault("X-Forwarded-Proto", request.scheme)
        if request.host.rpartition(":")[2].isdigit():
            headers.setdefault("X-Forwarded-Port", request.host.rpartition(":")[2])
        multi_headers: dict[str, list[str]] = {}
        for name, value in headers.items():
            multi_headers.setdefault(name, []).append(value)

        multi_query = {key: request.args.getlist(key) for key in request.args}
        raw_body = request.get_data(cache=False)
        body, is_base64 = _event_body(raw_body)
        return {
            "resource": resource_path,
            "path": request.path,
            "httpMethod": request.method,
            "headers": {name: values[-1] for name, values in multi_headers.items()},
            "multiValueHeaders": multi_headers,
            "queryStringParameters": {key: values[-1] for key, values in multi_query.items()}
            or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "accountId": LOCAL_ACCOUNT_ID,
                "apiId": LOCAL_API_ID,
                "resourceId": uuid.uuid5(uuid.NAMESPACE_URL, resource_path).hex[:6],
                "resourcePath": resource_path,
                "httpMethod": request.method,
                "stage": self._stage,
                # Without the stage, as API Gateway sends it behind a custom
                # domain: Powertools builds the Swagger UI's URLs from it.
                "path": request.path,
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "requestId": request_id,
                "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:12]).decode(),
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "domainName": request.host,
                "domainPrefix": request.host.split(".", 1)[0].split(":", 1)[0],
                "identity": {
                    "accountId": None,
                    "apiKey": None,
                    "apiKeyId": None,
                    "caller": None,
                    "cognitoAuthenticationProvider": None,
                    "cognitoAuthenticationType": None,
                    "cognitoIdentityId": None,
                    "cognitoIdentityPoolId": None,
                    "principalOrgId": None,
                    "sourceIp": source_ip,
                    "user": None,
                    "userAgent": request.headers.get("User-Agent"),
                    "userArn": None,
                },
            },
            "body": body,
            "isBase64Encoded": is_base64,
        }


def _event_body(raw: bytes) -> tuple[str | None, bool]:
    if not raw:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        # API Gateway base64-encodes bodies of the API's binaryMediaTypes; a
        # body that is not text can only get through that way.
        return base64.b64encode(raw).decode("ascii"), True


class MalformedProxyResponse(Exception):
    """The handler's result is not a Lambda proxy integration response."""


def proxy_response(result: Any) -> Response:
    """The HTTP response API Gateway builds from a proxy integration result."""
    if not isinstance(result, dict):
        raise MalformedProxyResponse(f"expected a dict, got {type(result).__name__}")
    status = result.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise MalformedProxyResponse(f"statusCode {status!r} is not an HTTP status")

    headers = Headers()
    # When a name is in both, API Gateway merges the lists; a pair given in
    # both appears once.
    for name, values in (result.get("multiValueHeaders") or {}).items():
        for value in values if isinstance(values, list) else [values]:
            headers.add(str(name), str(value))
    for name, value in (result.get("headers") or {}).items():
        if str(value) not in headers.getlist(str(name)):
            headers.add(str(name), str(value))
    # API Gateway's default for a proxy response without a Content-Type.
    headers.setdefault("Content-Type", "application/json")

    body = result.get("body")
    if body is None:
        payload = b""
    elif not isinstance(body, str):
        raise MalformedProxyResponse(f"body must be a string, got {type(body).__name__}")
    elif result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(body, validate=True)
        except binascii.Error as error:
            raise MalformedProxyResponse("isBase64Encoded but body is not base64") from error
    else:
        payload = body.encode("utf-8")
    return Response(payload, status=status, headers=headers)


def gateway_error(status: int, code: str, message: str) -> Response:
    """An answer from the gateway itself, in the API's error shape."""
    body = json.dumps({"error": {"code": code, "message": message, "details": []}})
    return Response(body, status=status, content_type="application/json")


class QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without its access log: the gateway logs each request itself.

    Requests the HTTP parser itself refuses (a header line over 64 KiB, more
    than 100 headers, a malformed request line) are answered in the API's
    error shape too, not with http.server's HTML page; an oversized header
    is API Gateway's REQUEST_TOO_LARGE (413).
    """

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
            status, error_code = 413, "request_too_large"
        elif code == HTTPStatus.REQUEST_URI_TOO_LONG:
            status, error_code = 414, "uri_too_long"
        else:
            status, error_code = code, "bad_request" if code == 400 else "gateway_refused"
        body = json.dumps(
            {
                "error": {
                    "code": error_code,
                    "message": message or HTTPStatus(status).phrase,
                    "details": [],
                }
            }
        ).encode()
        self.log_error("refused: %d %s", code, message)
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD" and status >= 200 and status not in (204, 304):
            self.wfile.write(body)
