"""``POST /api/chat`` straight from ASGI: the hottest route without Quart's per-request work.

Why it stays (issue 8). ``make bench`` scenario (a), 64 conversations x 10 turns, server on
one core, back to back on a quiet machine: 532-591 turns/s through the fast path, 378-393
with the route sent to the Quart view; the target is 500. In-process, with the chat service
stubbed out so only the web layer counts: about 120 us of CPU per turn here (of which ~60 us
was a disconnect watcher task, now gone: see below; ~20 us the edge), 320-400 us through the
Quart view (request context, URL matching, hooks, response object, a nursery and two tasks).

It is not a second stack: the edge (``web/api/edge.py``) calls it with the same
:class:`~web.api.exchange.Exchange` it keeps for every route, so the access line and the
metrics are the edge's, as for any route. The session comes from the one cookie reader
(:func:`web.api.turn.claimed_session_id`), the turn and its errors from
:func:`web.api.turn.open_turn` and :func:`web.api.turn.answer_turn` (the two halves of
:func:`~web.api.turn.run_turn`), an unexpected error from
:func:`web.api.errors.unexpected_error_parts`, exactly as in the Quart view. No Quart hook
applies to the route but the edge's own (``tests/test_edge.py`` pins that). The session API
tests run through both doors: ``app.asgi_app.fast_chat = False`` sends the route to Quart.

Like Quart, it cancels the turn when the client disconnects (dropped if queued, its upstream
call cancelled if running: issue 11, finding 9), and then sends nothing. An unstreamed turn
is watched by the request's own task: while the turn runs it waits for the disconnect, and
the answer interrupts that wait (``gone`` in :meth:`actors.ref.ReplySlot.wait`). A streamed
turn outlives that wait, so a watcher task beside it cancels its scope (as Quart does).
"""

from __future__ import annotations

import trio

from actors.errors import CallerLeft

from .asgi import (
    ClientLeft,
    Receive,
    Scope,
    Send,
    answer_and_close,
    declared_length,
    header_value,
    read_request_body,
    send_events,
    send_response,
)
from .errors import (
    BODY_TOO_LARGE,
    BODY_TOO_SLOW,
    ErrorParts,
    TooLarge,
    error_parts,
    http_error_type,
    json_error,
    unexpected_error_parts,
)
from .exchange import Exchange, exchange_of
from .state import AppState
from .turn import Turn, TurnResult, answer_turn, claimed_session_id, open_turn

ROUTE = "/api/chat"


async def serve_chat(
    state: AppState, scope: Scope, receive: Receive, send: Send, body_timeout_s: float
) -> None:
    """Answer one ``POST /api/chat``.

    A body over ``server.max_body_bytes`` is 413, one that takes longer than
    ``body_timeout_s`` (Quart's ``BODY_TIMEOUT``, as in the Quart view) 408, and the
    connection closes. If the client disconnects, the turn is cancelled and nothing is sent;
    cancelling this coroutine does the same.
    """
    headers = scope["headers"]
    limit = state.settings.server.max_body_bytes
    declared = declared_length(headers)
    if declared is not None and declared > limit:
        await answer_and_close(scope, receive, send, error_parts(TooLarge(BODY_TOO_LARGE)))
        return
    body = b""
    refusal: ErrorParts | None = None
    with trio.move_on_after(body_timeout_s) as reading:
        try:
            body = await read_request_body(receive, limit)
        except ClientLeft:
            return
        except TooLarge as error:
            refusal = error_parts(error)
    if reading.cancelled_caught:
        refusal = json_error(408, http_error_type(408), BODY_TOO_SLOW)
    if refusal is not None:
        await answer_and_close(scope, receive, send, refusal)
        return
    claimed = claimed_session_id(state, headers)
    exchange = exchange_of(scope)

    async def client_leaves() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        opened = await open_turn(state, body, claimed, header_value(headers, b"accept"))
        if isinstance(opened, Turn) and opened.streamed:
            await _serve_stream(state, opened, receive, send, exchange)
            return
        result = opened if isinstance(opened, TurnResult) else \
            await answer_turn(state, opened, gone=client_leaves)
    except CallerLeft:
        return  # the client left while the turn waited: it was cancelled, nothing to send
    except Exception:
        result = TurnResult(*unexpected_error_parts("POST", ROUTE))
    if exchange is not None:
        exchange.log_id = result.log_id
    await send_response(send, result.status, result.body, result.headers)


async def _serve_stream(state: AppState, turn: Turn, receive: Receive, send: Send,
                        exchange: Exchange | None) -> None:
    """Answer a streamed turn in a scope a watcher task cancels when the client leaves.

    The stream outlives the wait for its first piece, so a task beside it watches for the
    client's disconnect from the start to the last piece.
    """
    answered = False
    async with trio.open_nursery() as nursery:

        async def cancel_when_client_leaves() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not answered:
                nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_when_client_leaves)
        try:
            result = await answer_turn(state, turn)
        except Exception:
            result = TurnResult(*unexpected_error_parts("POST", ROUTE))
        if exchange is not None:
            exchange.log_id = result.log_id
        if result.events is not None:
            await send_events(send, result.status, result.events, result.headers)
            answered = True  # the whole stream went out: a client leaving now cancels nothing
        else:
            answered = True  # a client that leaves now cancels nothing: the answer is going out
            await send_response(send, result.status, result.body, result.headers)
        # The watcher ends on the http.disconnect that an ASGI server sends once the response
        # is complete: no cancellation on the way out (cancelling it cost ~40 us a turn).
        # A server that never sends it (Quart's test client) is given a second.
        nursery.cancel_scope.deadline = trio.current_time() + 1.0
