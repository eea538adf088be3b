"""``POST /api/chat`` straight from ASGI: the hottest route without Quart's per-request work.

Measured on one core: Quart's request/response machinery costs about 300 us per request
(/healthz: 1,100 us under Quart, 790 us as a bare ASGI app under the same Hypercorn), some
12% of a chat turn. This middleware, installed as ``app.asgi_app`` (Quart's place for ASGI
middleware), answers ``POST /api/chat`` itself with the same handler the Quart view runs
(``web.turn.run_turn``), and passes every other request, and the lifespan, on to Quart. The
access log line and the request metrics are the same as for any other route.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import BODY_TOO_LARGE, json_error
from .logs import log_access
from .metrics import METRICS_KEY, AppMetrics
from .state import AppState
from .turn import TurnResult, run_turn

log = logging.getLogger("actorchat.web")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

ROUTE = "/api/chat"


class FastChatPath:
    """ASGI middleware that serves ``POST /api/chat`` and hands the rest to ``inner``."""

    def __init__(self, inner: ASGIApp, state: AppState, extensions: dict[str, Any]) -> None:
        self._inner = inner
        self._state = state
        self._extensions = extensions
        self._cookie_prefix = state.settings.sessions.cookie_name.encode() + b"="

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != ROUTE or scope["method"] != "POST":
            await self._inner(scope, receive, send)
            return
        started = time.perf_counter()
        result = await self._answer(scope, receive)
        if result is None:
            return  # the client left before sending its whole body
        await send({
            "type": "http.response.start",
            "status": result.status,
            "headers": [
                (b"content-length", str(len(result.body)).encode()),
                *((name.encode("latin-1"), value.encode("latin-1"))
                  for name, value in result.headers),
            ],
        })
        await send({"type": "http.response.body", "body": result.body})
        elapsed = time.perf_counter() - started
        metrics: AppMetrics | None = self._extensions.get(METRICS_KEY)
        if metrics is not None:
            metrics.observe("POST", ROUTE, result.status, elapsed)
        if self._state.settings.server.access_log:
            log_access("POST", ROUTE, result.status, elapsed * 1000, result.log_id)

    async def _answer(self, scope: dict[str, Any], receive: Any) -> TurnResult | None:
        limit = self._state.settings.server.max_body_bytes
        cookie = None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return _too_large()
            if name == b"cookie":  # a client may split its cookies over several headers
                cookie = self._session_cookie(value) or cookie
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > limit:
                return _too_large()
            if not message.get("more_body", False):
                break
        try:
            return await run_turn(self._state, bytes(body), cookie)
        except Exception:
            log.exception("unhandled error in POST %s", ROUTE)
            return TurnResult(
                *json_error(500, "internal_error", "the server failed to handle this request")
            )

    def _session_cookie(self, header: bytes) -> str | None:
        for part in header.split(b";"):
            part = part.strip()
            if part.startswith(self._cookie_prefix):
                return part[len(self._cookie_prefix):].decode("latin-1")
        return None


def _too_large() -> TurnResult:
    return TurnResult(*json_error(413, "payload_too_large", BODY_TOO_LARGE))
