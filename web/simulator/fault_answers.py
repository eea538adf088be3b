"""How the simulator answers a request it refuses or sabotages.

The rpm 429 of an exhausted bucket, the injected 429 and 500/503, the hang and the dropped
connection, each as OpenAI (or a broken network) would send it. Which one, and when, is decided
in `app.py` from `faults.FaultPicker` and `rate_limit.TokenBucket`.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from .exchange import ApiError, Exchange, content_length
from .faults import Fault
from .rate_limit import BucketState, format_duration, retry_after_headers

HANG_CAP_S = 600.0
"""A hanging request is answered (500) after this long if the client is still waiting."""


async def send_rpm_limited(exchange: Exchange, state: BucketState, model: str) -> None:
    """The 429 for an exhausted bucket; ``retry-after`` is the wait for one token."""
    wait_s = state.next_token_s
    message = (
        f"Rate limit reached for requests per min (RPM) on {model} in the simulator:"
        f" Limit {state.limit}, Remaining {state.remaining}, Requested 1."
        f" Please try again in {format_duration(wait_s)}."
    )
    error = ApiError(429, message, type_="requests", code="rate_limit_exceeded")
    await exchange.error(error, retry_after_headers(wait_s, at_least_one=True))


async def send_injected_429(exchange: Exchange, model: str, retry_after_s: float) -> None:
    """The injected 429, with ``retry-after`` set to ``retry_after_s``."""
    message = (
        f"Rate limit reached for requests on {model} (simulated fault)."
        f" Please try again in {retry_after_s:g}s."
    )
    error = ApiError(429, message, type_="requests", code="rate_limit_exceeded")
    await exchange.error(error, retry_after_headers(retry_after_s))


async def send_server_error(exchange: Exchange, fault: Fault) -> None:
    """A 500 for `Fault.SERVER_ERROR_500`, a 503 for `Fault.SERVER_ERROR_503`."""
    if fault is Fault.SERVER_ERROR_500:
        status = 500
        message = "The server had an error while processing your request. Sorry about that!"
    else:
        status = 503
        message = "The engine is currently overloaded, please try again later."
    await exchange.error(ApiError(status, message, type_="server_error"))


async def hang(exchange: Exchange) -> None:
    """Answer nothing until the client disconnects; after `HANG_CAP_S`, a 500."""
    with trio.move_on_after(HANG_CAP_S):
        while (await exchange.receive())["type"] != "http.disconnect":
            pass
        return
    message = f"The simulated hang reached its cap of {HANG_CAP_S:g} s."
    await exchange.error(ApiError(500, message, type_="server_error"))


async def drop(exchange: Exchange, completion: dict[str, Any]) -> None:
    """Promise a whole body, send half of it, and end: the client sees the connection drop."""
    payload = json.dumps(completion).encode()
    await exchange.start(200, "application/json", [content_length(payload)])
    half = payload[: len(payload) // 2]
    await exchange.send({"type": "http.response.body", "body": half, "more_body": True})
    # Returning with the body unfinished is enough: Hypercorn's h11 protocol then sees that the
    # response is not DONE and closes the connection (`H11Protocol._maybe_recycle`), so there is
    # no need to raise and have a traceback logged for every dropped request.
