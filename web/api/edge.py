"""The edge: the ASGI layer between Hypercorn and Quart that every HTTP request goes through.

Installed by :func:`install_edge` as ``app.asgi_app`` (Quart's place for ASGI middleware). For
each request it

- refuses a request with both Content-Length and Transfer-Encoding (400 JSON, connection
  closed): RFC 9112 §6.1 says to close after such a request, as the bytes after it may be a
  smuggled second request (issue 11, finding 7);
- sends ``POST /api/chat`` to the fast path (``web/api/fast_path.py``) while ``fast_chat`` is
  on, everything else to Quart;
- makes sure the connection is closed after ``Connection: close`` and HTTP/1.0 requests (and
  that Hypercorn's keep-alive timer restarts after a kept-alive reply): see
  :class:`_Guard`;
- counts and logs the request once it ends (:mod:`web.api.metrics`, the access log), whichever
  path answered it, with the route label Quart matched.

It also turns off werkzeug's merging of slashes, whose 308 answers were HTML (finding 8): with
one URL per resource, ``/api//chat`` is a JSON 404.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import trio
from quart import Quart, request

from .asgi import ASGIApp, Message, Receive, Scope, Send, answer_and_close
from .errors import json_error
from .exchange import CLIENT_LEFT, EXCHANGE_KEY, Exchange
from .fast_path import ROUTE as CHAT_ROUTE
from .fast_path import serve_chat
from .logs import log_access
from .metrics import METRICS_KEY, AppMetrics, method_label
from .state import AppState

AMBIGUOUS_LENGTH = (
    "a request must not carry both Content-Length and Transfer-Encoding (RFC 9112 §6.1)"
)


def ambiguous_framing(headers: list[tuple[bytes, bytes]]) -> bool:
    """True if the request has both Content-Length and Transfer-Encoding."""
    length = encoding = False
    for name, _ in headers:
        name = name.lower()
        length = length or name == b"content-length"
        encoding = encoding or name == b"transfer-encoding"
    return length and encoding


class _Guard:
    """The request's ``send``, as the edge hands it to the app.

    It notes the status for the exchange, records the exchange just before the response's
    last message goes out, and shields that last ``send`` from cancellation. Why: Hypercorn
    (0.18) ends a response inside that last ``send``, in the app's task. It queues
    ``http.disconnect`` for the app, then closes the connection (``Connection: close``,
    HTTP/1.0) or restarts its keep-alive timer, both past a Trio checkpoint. Quart-Trio's
    receiver task reads the disconnect and cancels the request's nursery, so that checkpoint
    raises Cancelled: the socket is never closed, nor the keep-alive timer restarted, and the
    connection stays open until the client closes it. A plain ASGI app that is never
    cancelled closes fine. Shielded, the last ``send`` finishes Hypercorn's work; the
    cancellation lands right after. The shield cannot hang: Hypercorn already shields its
    socket writes, and the app's receiver keeps draining the queue the disconnect goes into.
    """

    __slots__ = ("_exchange", "_record", "_send")

    def __init__(self, send: Send, exchange: Exchange,
                 record: Callable[[Exchange], None]) -> None:
        self._send = send
        self._exchange = exchange
        self._record = record

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._exchange.status = message["status"]
        elif kind == "http.response.body" and not message.get("more_body", False):
            self._record(self._exchange)  # before the client can see the end of the reply
            with trio.CancelScope(shield=True):
                await self._send(message)
            return
        await self._send(message)


class Edge:
    """The ASGI app Hypercorn calls: edge checks, the fast path or Quart, then the record.

    ``fast_chat`` (default on) routes ``POST /api/chat`` to the fast path; off, Quart's view
    serves it (the session API tests run both ways). Lifespan and other scopes go to Quart
    untouched. Cancelling a request (the server shutting down) records it as unanswered.
    """

    def __init__(self, inner: ASGIApp, state: AppState, extensions: dict[str, Any],
                 config: Mapping[str, Any]) -> None:
        self.inner = inner
        self.fast_chat = True
        self._state = state
        self._extensions = extensions
        self._config = config  # Quart's: BODY_TIMEOUT, read per request as Quart reads it
        self._access_log = state.settings.server.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        exchange = Exchange(scope["method"], scope["path"], time.perf_counter())
        scope[EXCHANGE_KEY] = exchange
        guard = _Guard(send, exchange, self._record)
        try:
            if ambiguous_framing(scope["headers"]):
                parts = json_error(400, "invalid_request", AMBIGUOUS_LENGTH)
                await answer_and_close(scope, receive, guard.send, parts,
                                       read_first=self._state.settings.server.max_body_bytes)
            elif self.fast_chat and scope["method"] == "POST" and scope["path"] == CHAT_ROUTE:
                exchange.route = CHAT_ROUTE
                await serve_chat(self._state, scope, receive, guard.send,
                                 self._config["BODY_TIMEOUT"])
            else:
                await self.inner(scope, receive, guard.send)
        except Exception:
            if exchange.status is None:
                exchange.status = 500  # Hypercorn answers 500 for an app that raised
            raise
        finally:
            if not exchange.recorded:
                self._record(exchange)

    def _record(self, exchange: Exchange) -> None:
        exchange.recorded = True
        seconds = time.perf_counter() - exchange.started
        status = exchange.status if exchange.status is not None else CLIENT_LEFT
        metrics: AppMetrics | None = self._extensions.get(METRICS_KEY)
        if metrics is not None:
            metrics.observe(method_label(exchange.method), exchange.route, status, seconds)
        if self._access_log:
            log_access(exchange.method, exchange.path, status, seconds * 1000, exchange.log_id)


def install_edge(app: Quart, state: AppState) -> Edge:
    """Put the edge in front of ``app`` and let it learn each request's URL rule.

    Call after :func:`web.api.metrics.install_metrics`. Returns the edge (``app.asgi_app``).
    """
    app.url_map.merge_slashes = False  # /api//chat is not /api/chat: 404, not a 308

    @app.before_request
    async def _note_route() -> None:
        # Before, not after: a request cancelled in its handler (the client left) has its
        # route too. A request that matched no rule keeps UNMATCHED_ROUTE.
        exchange: Exchange | None = request.scope.get(EXCHANGE_KEY)
        rule = request.url_rule
        if exchange is not None and rule is not None:
            exchange.route = rule.rule

    edge = Edge(app.asgi_app, state, app.extensions, app.config)
    app.asgi_app = edge  # type: ignore[method-assign]
    return edge
