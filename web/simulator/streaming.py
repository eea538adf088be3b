"""A streamed answer: ``chat.completion.chunk`` events, paced, and broken off when told to.

The events are OpenAI's: a first chunk whose delta carries ``role: "assistant"``, the content
chunks, a chunk with an empty delta and the ``finish_reason``, with ``include_usage`` a chunk
with no choices and the ``usage``, then ``data: [DONE]``. `send_stream` waits ``delay_s``
between two writes and nowhere else. Content chunk ``k`` is due ``k * delay_s`` after the
first, so an answer of N chunks takes ``(N - 1) * delay_s`` after its first byte, and a write
carries every event due by the time it goes out: the role chunk with the first piece, the end
of the stream with the last, and, in a stream that fell behind (a busy CPU), every chunk that
came due meanwhile, instead of the stream drifting later chunk by chunk. The events and their
order are the same either way; only their cut into HTTP chunks differs. Under overload that
is most of a chunk's CPU: 200 streams of 20 chunks 5 ms apart went from 193-239 to 81-90 us of
simulator CPU per chunk (``actorchat simulate`` pinned to one core, 3 rounds each, back to
back), and 20 streams 20 ms apart, which keep up, from 3750-3940 to 3420-3690 us per stream.
Pinned by ``test_a_stream_that_fell_behind_catches_up_in_one_write``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import trio

from .completions import DONE, Answer, ChunkEncoder, split_text, sse
from .exchange import Exchange
from .faults import Fault

MID_STREAM_ERROR = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
"""The in-band error event of `Fault.STREAM_ERROR`, as OpenAI sends one after a 200 has begun
(the ``openai`` SDK raises ``APIError`` for a chunk with an ``error`` key)."""


class StreamEnd(enum.Enum):
    """How a stream ended; the value is the name of the simulator's counter for it."""

    COMPLETED = "streamed"
    DROPPED = "drop"
    ERROR = "stream_error"
    CLIENT_LEFT = "client_left"


def fault_point(content_chunks: int) -> int:
    """After how many content chunks a mid-stream fault strikes: half of them, at least one
    (none when there is no content)."""
    return max(1, content_chunks // 2) if content_chunks else 0


def _writes(whole: Answer, pieces: list[str], include_usage: bool, fault: Fault) -> list[bytes]:
    """The body in writes, one per moment: a delay separates each write from the next.

    The last write has the end of the stream, unless ``fault`` cuts it: then the writes stop
    at `fault_point`, the last one carrying the error event for `Fault.STREAM_ERROR`.
    """
    encoder = ChunkEncoder(whole, include_usage=include_usage)
    role = encoder.chunk({"role": "assistant", "content": "", "refusal": None})
    content = [encoder.content(piece) for piece in pieces]
    writes = [role + (content[0] if content else b"")] + content[1:]
    if fault in (Fault.DROP, Fault.STREAM_ERROR):
        writes = writes[: max(1, fault_point(len(pieces)))]
        if fault is Fault.STREAM_ERROR:
            writes[-1] += sse(MID_STREAM_ERROR)
        return writes
    writes[-1] += encoder.chunk({}, whole.finish_reason)
    if include_usage:
        writes[-1] += encoder.usage()
    writes[-1] += DONE
    return writes


@dataclass
class _Progress:
    """How the stream has ended so far: the client left, until the last write is handed over."""

    end: StreamEnd = StreamEnd.CLIENT_LEFT


async def _send_writes(
    exchange: Exchange, writes: list[bytes], delay_s: float, fault: Fault, progress: _Progress
) -> None:
    await exchange.start(200, "text/event-stream; charset=utf-8", [("cache-control", "no-cache")])
    first_at = trio.current_time()
    sent = 0
    while sent < len(writes):
        if sent:
            await trio.sleep(delay_s)
        upto = _due_by(trio.current_time(), first_at, delay_s, sent + 1, len(writes))
        last = upto == len(writes)
        if last:
            # Set before the write: once the end of the body is sent, Hypercorn reports the
            # stream closed to `_cancel_when_client_leaves`, which may cancel this very send.
            progress.end = _ENDS.get(fault, StreamEnd.COMPLETED)
        more_body = not last or fault is Fault.DROP
        data = b"".join(writes[sent:upto])
        await exchange.send({"type": "http.response.body", "body": data, "more_body": more_body})
        sent = upto
    # A DROP returns with the body unfinished: Hypercorn then closes the connection without the
    # chunked body's last chunk, and the client sees the connection drop mid-stream.


def _due_by(now: float, first_at: float, delay_s: float, start: int, count: int) -> int:
    """The end of the run of writes from ``start`` that are due by ``now``, write ``k`` being
    due ``k * delay_s`` after the first: a stream that fell behind catches up in one write."""
    while start < count and first_at + start * delay_s <= now:
        start += 1
    return start


_ENDS = {Fault.DROP: StreamEnd.DROPPED, Fault.STREAM_ERROR: StreamEnd.ERROR}


async def _cancel_when_client_leaves(exchange: Exchange, scope: trio.CancelScope) -> None:
    while (await exchange.receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def send_stream(
    exchange: Exchange,
    whole: Answer,
    *,
    include_usage: bool,
    chunks: int,
    delay_s: float,
    fault: Fault = Fault.NONE,
) -> StreamEnd:
    """Send ``whole`` as SSE in ``chunks`` content chunks, ``delay_s`` apart; return how it ended.

    ``fault`` `Fault.DROP` drops the connection after `fault_point` content chunks;
    `Fault.STREAM_ERROR` sends `MID_STREAM_ERROR` there and ends the body (no ``[DONE]``); any
    other fault is ignored (they strike before the first byte, in ``app.py``). If the client
    disconnects before the last write, the stream stops at once and returns
    `StreamEnd.CLIENT_LEFT`. On cancel, the stream stops where it is and the cancellation
    propagates.
    """
    writes = _writes(whole, split_text(whole.content, chunks), include_usage, fault)
    if delay_s <= 0:
        writes = [b"".join(writes)]  # nothing between them: one write (a drop still cuts it)
    progress = _Progress()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_when_client_leaves, exchange, nursery.cancel_scope)
        await _send_writes(exchange, writes, delay_s, fault, progress)
        nursery.cancel_scope.cancel()
    return progress.end
