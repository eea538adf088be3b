"""See inside the running server: ``GET /debug/actors``, ``/debug/actors/{key}``, ``/debug``.

Access (DESIGN.md, Security): with ``debug.token`` set (``DEBUG_TOKEN``), every debug route
wants ``Authorization: Bearer <token>``, from loopback clients too; a missing or wrong token is
401 with ``WWW-Authenticate: Bearer``. With no token set, only loopback clients (127.0.0.0/8,
::1) get in; anyone else gets 403. The client address is the connection's peer as the ASGI
server reports it, so behind a reverse proxy every client looks local: set ``DEBUG_TOKEN``
there.

The HTML page ``/debug`` also takes the token as ``?token=``, because a browser cannot add a
header to a page it navigates to; the page reads it from its own address and sends it on as a
bearer header when it fetches ``/debug/actors``. The page itself contains no secret and no data:
everything it shows arrives by that fetch and is rendered with ``textContent``, never as HTML.
A token in an address can end up in browser history; over loopback without a token no
``?token=`` is needed.

Everything shown comes from one frozen snapshot, ``ChatService.stats()``, which never awaits
an actor. The list is the ``limit`` most recently active actors (``heapq.nlargest``, not a
sort of every actor), and stats are taken only of those shown. No
setting's secret value (API key, session secret, debug token) is ever written out; free-text
fields (activity, last error) are scrubbed of them as a second line of defence.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import asdict
from datetime import UTC, datetime

from quart import Blueprint, Response, jsonify, request
from quart_schema import document_querystring, document_response, security_scheme

from actors.actor import ActorStats
from actors.errors import StoreUnavailable
from actors.stats import ServiceStats

from .debug_page import page_response
from .errors import BadInput, Forbidden, Unauthorized, error_response, response_for
from .openapi import DEBUG_SECURITY, document_errors, document_media
from .state import app_state, chat_service
from .status_models import ActorDetail, ActorListing, DebugQuery

blueprint = Blueprint("debug", __name__)

STATES = ("idle", "busy", "stopping")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
_PAGE_ENDPOINT = "debug.page"
_REDACTED = "[redacted]"


# Access


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _peer_host() -> str | None:
    # The ASGI scope's peer, not a header: a client can send any header it likes.
    client = request.scope.get("client")
    return client[0] if client else None


def _bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _unauthorized(message: str) -> Response:
    response = response_for(Unauthorized(message))
    response.headers["WWW-Authenticate"] = 'Bearer realm="actorchat debug"'
    return response


@blueprint.before_request
async def _check_access() -> Response | None:
    """Let the request through (None) or answer it with 401 or 403."""
    expected = app_state().settings.debug.token
    if expected is None:
        if _is_loopback(_peer_host()):
            return None
        return response_for(Forbidden(
            "the debug endpoints answer only loopback clients when DEBUG_TOKEN is not set"
        ))
    given = _bearer_token()
    if given is None and request.endpoint == _PAGE_ENDPOINT:
        given = request.args.get("token") or None
    if given is None:
        return _unauthorized("the debug endpoints need Authorization: Bearer <DEBUG_TOKEN>")
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        return _unauthorized("the debug token is wrong")
    return None


@blueprint.after_request
async def _no_store(response: Response) -> Response:
    # Debug answers show conversation state: keep them out of every cache.
    response.headers["Cache-Control"] = "no-store"
    return response


# Snapshots


def _iso(timestamp: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds, e.g. ...T23:30:00.123Z."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _secret_values() -> list[str]:
    settings = app_state().settings
    values = []
    for secret in (settings.upstream.api_key, settings.sessions.secret, settings.debug.token):
        if secret is not None and secret.get_secret_value():
            values.append(secret.get_secret_value())
    return values


def _scrub(text: str | None, secret_values: list[str]) -> str | None:
    if text is None:
        return None
    for value in secret_values:
        text = text.replace(value, _REDACTED)
    return text


def actor_body(stats: ActorStats, secret_values: list[str]) -> dict[str, object]:
    """One actor as the debug endpoints show it."""
    return {
        "kind": stats.kind,
        "key": stats.key,
        "state": stats.state,
        "mailbox_depth": stats.mailbox_depth,
        "mailbox_capacity": stats.mailbox_capacity,
        "handled": stats.handled,
        "errors": stats.errors,
        "restarts": stats.restarts,
        "started": _iso(stats.started_at),
        "last_active": _iso(stats.last_active),
        "activity": _scrub(stats.activity, secret_values),
    }


def totals_body(stats: ServiceStats) -> dict[str, object]:
    """The system-wide numbers: actors, upstream calls, the rate gate, jobs."""
    actors, upstream, jobs = stats.actors, stats.upstream, stats.jobs
    redis = {} if stats.redis is None else {"redis": {part: dict(counts) for part, counts
                                                      in stats.redis.items()}}
    return {
        "actors": {
            "live": dict(actors.live),
            "started": dict(actors.started),
            "stopped": dict(actors.stopped),
            "crashed": dict(actors.crashed),
        },
        "upstream": {
            "label": upstream.label,
            "in_flight": upstream.in_flight,
            "calls": dict(upstream.calls),
            "retries": upstream.retries,
            "gate": {"state": "open" if upstream.gate.open else "closed",
                     **asdict(upstream.gate)},
        },
        "jobs": {
            "running": jobs.running,
            "queued": jobs.queued,
            "by_status": dict(jobs.by_status),
        },
        **redis,
    }


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_LIMIT:
        raise BadInput(f"limit must be a whole number from 0 to {MAX_LIMIT}")
    return int(raw)


def _parse_state(raw: str | None) -> str | None:
    if raw is not None and raw not in STATES:
        raise BadInput(f"state must be one of {', '.join(STATES)}")
    return raw


@blueprint.get("/debug/actors")
@security_scheme(DEBUG_SECURITY)
@document_querystring(DebugQuery)
@document_response(ActorListing, 200)
@document_errors(400, 401, 403)
async def actors() -> Response:
    """Live actors, most recently active first, with system-wide totals.

    Query: ``kind`` (e.g. ``session``, ``job``), ``state`` (``idle``, ``busy``,
    ``stopping``), ``limit`` (default 100, at most 10,000). A bad ``state`` or ``limit`` is
    400. ``matched`` counts the actors that passed the filters before ``limit`` cut them.
    """
    state_filter = _parse_state(request.args.get("state"))
    limit = _parse_limit(request.args.get("limit"))
    kind = request.args.get("kind") or None
    service = chat_service()
    stats = service.stats(kind=kind, state=state_filter, limit=limit)
    secret_values = _secret_values()
    return jsonify({
        "instance": stats.instance,
        "actors": [actor_body(actor, secret_values) for actor in stats.listed],
        "matched": stats.matched,
        "totals": totals_body(stats),
        "stream": await _stream_body(),
    })


async def _stream_body() -> dict[str, object] | None:
    """The Redis job stream and the live instances; None with the memory store, and
    ``{"error": ...}`` when Redis does not answer (the rest of the page still shows)."""
    try:
        stream = await chat_service().stream_stats()
    except StoreUnavailable as error:
        return {"error": error.message}
    return None if stream is None else asdict(stream)


@blueprint.get("/debug/actors/<key>")
@security_scheme(DEBUG_SECURITY)
@document_response(ActorDetail, 200)
@document_errors(401, 403, 404)
async def actor(key: str) -> Response:
    """The live actor with this key (of any kind, or of ``?kind=``), or 404.

    Adds ``last_error``, ``history_length``: for a session, the number of messages in its
    conversation (user and assistant), and ``last_context_messages``: how many messages its
    last turn sent upstream (system prompt included); ``null`` for other kinds.
    """
    kind = request.args.get("kind") or None
    listed = chat_service().stats(key=key, kind=kind, limit=1).listed
    if not listed:
        return error_response(404, "not_found", "no live actor has this key")
    secret_values = _secret_values()
    stats = listed[0]
    body = actor_body(stats, secret_values)
    body["last_error"] = _scrub(stats.last_error, secret_values)
    body["history_length"] = stats.history_length
    body["last_context_messages"] = stats.last_context_messages
    return jsonify(body)


# The page


@blueprint.get("/debug")
@security_scheme(DEBUG_SECURITY)
@document_media(200, "text/html", "a page that shows /debug/actors and refreshes it")
@document_errors(401, 403)
async def page() -> Response:
    """A self-contained page that shows ``/debug/actors`` and refreshes it every 2 s.

    Takes ``?token=`` (see the module docstring) and passes it on as a bearer header. The
    Content-Security-Policy lets only this page's own script and style run, and lets it
    connect only to this server. The page itself is `web.debug_page`.
    """
    return page_response()
