"""One attempt at a streamed completion, as the retrying caller makes it.

Kept apart from :mod:`actors.upstream_caller` so that module stays about retries: this one is
about where a stream may still be retried (before its first piece reached the reader) and how
its time is bounded (the attempt's deadline until the first event, then each gap between
events).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from .errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .upstream import ChatRequest, Completion, Delta, Upstream

OnPiece = Callable[[str], Awaitable[None]]


class StreamedAttempt:
    """Called once per attempt with the request and the attempt's deadline scope.

    Each non-empty :class:`Delta` goes to ``on_piece``; the final :class:`Completion` is
    returned. Once a piece was delivered, an :class:`UpstreamError` is marked not transient,
    so the caller does not retry a stream the reader has part of. An error from ``on_piece``
    (its reader went away) propagates as it is. Cancelling closes the upstream stream.
    ``on_answered`` is called at the first event: the upstream has answered (the rate gate
    ends its start-up probing then, not 20 chunks later when the stream ends).
    """

    __slots__ = ("_on_answered", "_on_piece", "_timeout_s", "_upstream", "delivered")

    def __init__(self, upstream: Upstream | None, on_piece: OnPiece, timeout_s: float,
                 on_answered: Callable[[], None] = lambda: None) -> None:
        self._upstream = upstream
        self._on_piece = on_piece
        self._timeout_s = timeout_s
        self._on_answered = on_answered
        self.delivered = False  # a piece went to the reader: no more retries

    async def __call__(self, request: ChatRequest, deadline: trio.CancelScope) -> Completion:
        assert self._upstream is not None
        try:
            async with self._upstream.stream(request) as events:
                self._on_answered()
                with trio.CancelScope() as gap:
                    async for event in events:
                        deadline.deadline = math.inf  # from the first event on, gaps count
                        gap.deadline = trio.current_time() + self._timeout_s
                        if isinstance(event, Delta):
                            if event.text:
                                self.delivered = True
                                await self._on_piece(event.text)
                            continue
                        return event
                if gap.cancelled_caught:
                    raise UpstreamTimeout(
                        f"the upstream stream was silent for {self._timeout_s:g} s"
                    )
                raise UpstreamUnavailable("the upstream stream ended before its last event")
        except UpstreamError as error:
            if self.delivered:
                error.transient = False  # the reader has part of the answer: never retried
            raise
