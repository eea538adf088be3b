"""Every error leaves as JSON: ``{"error": {"type", "message"}}``, statuses from DESIGN.md."""

from __future__ import annotations

import json
import logging
import math

from quart import Quart, Response, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect

from actors import errors

from .logs import escape_control

log = logging.getLogger("actorchat.web")


class BadInput(errors.ActorChatError):
    """The request body or query is not what the route takes (400)."""

    type = "invalid_request"


class TooLarge(errors.ActorChatError):
    """The body or the prompt is over its limit (413)."""

    type = "payload_too_large"


class Unauthorized(errors.ActorChatError):
    type = "unauthorized"


class Forbidden(errors.ActorChatError):
    type = "forbidden"


# The one table from domain error to HTTP status; the first matching class wins.
STATUS_BY_ERROR: tuple[tuple[type[errors.ActorChatError], int], ...] = (
    (BadInput, 400),
    (TooLarge, 413),
    (Unauthorized, 401),
    (Forbidden, 403),
    (errors.SessionBusy, 429),
    (errors.UpstreamRateLimited, 429),
    (errors.TooManyActors, 503),
    (errors.ShuttingDown, 503),
    (errors.JobQueueFull, 503),
    (errors.MailboxesFull, 503),
    (errors.ActorStopped, 503),
    (errors.UpstreamNotConfigured, 503),
    (errors.StoreUnavailable, 503),
    (errors.SessionGone, 503),
    (errors.JobNotFound, 404),
    (errors.IdempotencyConflict, 409),
    (errors.UpstreamRefusedKey, 502),
    (errors.UpstreamCertificateError, 502),
    (errors.UpstreamRejected, 400),
    (errors.UpstreamUnavailable, 502),
    (errors.UpstreamTimeout, 504),
    (errors.JobTimedOut, 504),
)


def status_of(error: errors.ActorChatError) -> int:
    for error_class, status in STATUS_BY_ERROR:
        if isinstance(error, error_class):
            return status
    return 500


BODY_TOO_LARGE = "the request body is larger than server.max_body_bytes"
BODY_TOO_SLOW = "the request body did not arrive in time"


def error_body(error_type: str, message: str) -> bytes:
    return json.dumps(
        {"error": {"type": error_type, "message": message}}, separators=(",", ":")
    ).encode()


ErrorParts = tuple[int, bytes, list[tuple[str, str]]]


def json_error(
    status: int, error_type: str, message: str, retry_after: float | None = None
) -> ErrorParts:
    """Status, JSON body and headers of an error, with ``Retry-After`` (whole seconds, at
    least 1) when given; without a framework, for the ASGI fast path and Quart alike."""
    headers = [("Content-Type", "application/json")]
    if retry_after is not None:
        headers.append(("Retry-After", str(max(1, math.ceil(retry_after)))))
    return status, error_body(error_type, message), headers


def error_response(
    status: int, error_type: str, message: str, retry_after: float | None = None
) -> Response:
    """A JSON error response for Quart."""
    status, body, headers = json_error(status, error_type, message, retry_after)
    return Response(body, status=status, headers=headers)


def error_parts(error: errors.ActorChatError) -> ErrorParts:
    """Status, JSON body and headers for a domain error."""
    retry_after = getattr(error, "retry_after", None)
    status = status_of(error)
    if status in (429, 503) and retry_after is None:
        retry_after = 1
    return json_error(status, error.type, error.message, retry_after)


def unexpected_error_parts(method: str, path: str) -> ErrorParts:
    """Log the exception being handled, with its traceback, and build the bare 500.

    Both doors to a route call this, so an unexpected error reads the same in the log and on
    the wire whichever answered; the error's text never reaches the client.
    """
    log.exception("unhandled error in %s %s", method, escape_control(path))
    return json_error(500, "internal_error", "the server failed to handle this request")


def response_for(error: errors.ActorChatError) -> Response:
    status, body, headers = error_parts(error)
    return Response(body, status=status, headers=headers)


def http_error_type(status: int) -> str:
    """The error type for a plain HTTP status (``not_found``, ``request_timeout``...)."""
    return {
        400: "invalid_request",
        404: "not_found",
        408: "request_timeout",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
    }.get(status, "http_error")


def register_error_handlers(app: Quart) -> None:
    """Turn every exception a route can raise into a JSON error response.

    Werkzeug's routing redirects (``RequestRedirect``: a rule ending in ``/`` asked for
    without it) bypass error handlers and answer HTML; an after-request hook gives them a
    JSON body. (The edge turns off slash merging, the other source of them.)
    """

    @app.after_request
    async def _json_redirect(response: Response) -> Response:
        redirect = request.routing_exception
        if not isinstance(redirect, RequestRedirect):
            return response
        status, body, headers = json_error(
            redirect.code, "moved", f"this resource is at {redirect.new_url}"
        )
        moved = Response(body, status=status, headers=headers)
        moved.headers["Location"] = redirect.new_url
        return moved

    @app.errorhandler(errors.ActorChatError)
    async def _domain(error: errors.ActorChatError) -> Response:
        return response_for(error)

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema(error: RequestSchemaValidationError) -> Response:
        return error_response(400, "invalid_request", str(error.validation_error))

    @app.errorhandler(HTTPException)
    async def _http(error: HTTPException) -> Response:
        status = error.code or 500
        message = error.description or error.name
        if status == 413:
            message = BODY_TOO_LARGE
        elif status == 408:
            message = BODY_TOO_SLOW
        response = error_response(status, http_error_type(status), message)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)  # RFC 9110 §15.5.6
        return response

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        status, body, headers = unexpected_error_parts(request.method, request.path)
        return Response(body, status=status, headers=headers)
