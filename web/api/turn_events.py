"""A streamed turn as server-sent events: what both doors to ``POST /api/chat`` send.

``data: {"delta": "..."}`` per piece of the answer (pieces already waiting are written
together), then ``data: {"response", "model", "usage"}`` once the turn is recorded, then
``data: [DONE]``. An error after the first byte is ``event: error`` with ``{type, message}``
and ends the stream; nothing was recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from actors.errors import ActorChatError
from actors.session import TurnReply, TurnStream

from .sse import DONE, HEADERS, sse_event


async def open_event_stream(
    turn: TurnStream,
) -> tuple[AsyncIterator[bytes], list[tuple[str, str]]]:
    """Wait for the turn's first piece (or its reply), then hand back the event stream.

    Raises the turn's error if it fails before its first piece, so the caller can answer it
    as JSON. The returned iterator owns the turn: closing it (``aclose``) before the end,
    or cancelling whoever iterates it, cancels the turn and records nothing.
    """
    reply: TurnReply | None = None
    try:
        first = await _next_pieces(turn.pieces)
        if first is None:
            reply = await turn.reply()
    except BaseException:
        turn.close()
        raise
    return _events(turn, first, reply), list(HEADERS)


async def _next_pieces(pieces: trio.MemoryReceiveChannel[str]) -> bytes | None:
    """The next piece and every piece already waiting behind it, as events; None at the end."""
    try:
        piece = await pieces.receive()
    except trio.EndOfChannel:
        return None
    events = [sse_event({"delta": piece})]
    while True:
        try:
            events.append(sse_event({"delta": pieces.receive_nowait()}))
        except (trio.WouldBlock, trio.EndOfChannel):
            return b"".join(events)


async def _events(turn: TurnStream, first: bytes | None, reply: TurnReply | None,
                  ) -> AsyncIterator[bytes]:
    with turn:
        if reply is None:
            chunk = first
            while chunk is not None:
                yield chunk
                chunk = await _next_pieces(turn.pieces)
            try:
                reply = await turn.reply()
            except ActorChatError as error:
                yield sse_event({"type": error.type, "message": error.message}, event="error")
                return
        yield sse_event({"response": reply.response, "model": reply.model,
                         "usage": reply.usage}) + DONE
