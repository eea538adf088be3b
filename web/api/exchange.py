"""One request as the edge sees it: what its access-log line and its metrics record.

The edge (``web/api/edge.py``) creates an :class:`Exchange` for every HTTP request and puts it
in the ASGI scope, which Quart's ``request.scope`` shares; routes name the session or job in
it with :func:`note_log_id`. When the request ends, the edge counts and logs it, whichever
path answered it (the fast path, Quart, or the edge itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXCHANGE_KEY = "actorchat.exchange"
UNMATCHED_ROUTE = "unmatched"  # the route label of a request that matched no URL rule
CLIENT_LEFT = 499  # the status recorded when the client left before a response started


@dataclass(slots=True)
class Exchange:
    """One request: ``route`` is the URL rule (``/chat/<trace_id>/response``), never the raw
    path, so no ID or typo becomes a metric label; ``status`` is None until the response
    starts; ``log_id`` names the session or job in the access log."""

    method: str
    path: str
    started: float
    route: str = UNMATCHED_ROUTE
    status: int | None = None
    log_id: str | None = None
    recorded: bool = False  # counted and logged already


def exchange_of(scope: dict[str, Any]) -> Exchange | None:
    """The request's exchange, or None when the app runs without the edge."""
    return scope.get(EXCHANGE_KEY)


def note_log_id(scope: dict[str, Any], log_id: str | None) -> None:
    """Name the session or job this request is about, for its access-log line."""
    exchange = scope.get(EXCHANGE_KEY)
    if exchange is not None:
        exchange.log_id = log_id
