"""Logging: one format for everything, and one access line per request."""

from __future__ import annotations

import logging
import time

from quart import Quart, Response, g, request

access_log = logging.getLogger("actorchat.access")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx2 logs every request at INFO with its URL; ours is the access log.
    for noisy in ("httpx", "httpx2", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def install_access_log(app: Quart) -> None:
    """Log method, path, status, duration and a short session or trace ID prefix.

    Never the prompt or the answer: those stay out of INFO logs.
    """

    @app.before_request
    async def _start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def _log_request(response: Response) -> Response:
        started = getattr(g, "started", None)
        duration_ms = (time.perf_counter() - started) * 1000 if started else 0.0
        log_access(request.method, request.path, response.status_code, duration_ms,
                   getattr(g, "log_id", None))
        return response


def log_access(method: str, path: str, status: int, duration_ms: float, log_id: str | None,
               ) -> None:
    """The access line: method, path, status, duration, and the first 8 characters of the
    session or trace ID (never the prompt or the answer)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("%s %s %d %.1fms %s", method, path, status, duration_ms,
                        log_id[:8] if log_id else "-")
