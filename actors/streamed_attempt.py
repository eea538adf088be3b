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
from .upstream import ChatRequest, Completion, Delta, Head, RateLimitInfo, Upstream

OnPiece = Callable[[str], Awaitable[None]]
OnHead = Callable[[RateLimitInfo | None], None]

# The gap deadline is moved only when it is nearer than ``timeout_s`` less this share of it:
# moving a deadline is a heap update in Trio's run loop, and events come every few ms. So a
# silence of between 90% and 100% of ``timeout_s`` after an event counts as a timeout.
_GAP_SLACK = 0.1


class StreamedAttempt:
    """Called once per attempt with the request, the attempt's deadline scope, the call's
    retry budget scope and what to call with the budget the response head reports.

    Each non-empty :class:`Delta` goes to ``on_piece``; the final :class:`Completion` is
    returned. Once a piece was delivered, an :class:`UpstreamError` is marked not transient,
    so the caller does not retry a stream the reader has part of. An error from ``on_piece``
    (its reader went away) propagates as it is. Cancelling closes the upstream stream.
    ``on_head`` gets the stream's `Head`: the rate gate learns the budget then, not 20
    chunks later when the stream ends (meanwhile it would let every waiting call through).
    """

    __slots__ = ("_on_piece", "_timeout_s", "_upstream", "delivered")

    def __init__(self, upstream: Upstream | None, on_piece: OnPiece, timeout_s: float) -> None:
        self._upstream = upstream
        self._on_piece = on_piece
        self._timeout_s = timeout_s
        self.delivered = False  # a piece went to the reader: no more retries

    async def __call__(self, request: ChatRequest, deadline: trio.CancelScope,
                       budget: trio.CancelScope, on_head: OnHead) -> Completion:
        assert self._upstream is not None
        try:
            async with self._upstream.stream(request) as events:
                # From the head on, only the gaps between events count: an answer may stream
                # for longer than one attempt's timeout or the whole call's retry budget.
                deadline.deadline = budget.deadline = math.inf
                timeout_s = self._timeout_s
                near = timeout_s * (1 - _GAP_SLACK)
                with trio.CancelScope(deadline=trio.current_time() + timeout_s) as gap:
                    async for event in events:
                        now = trio.current_time()
                        if gap.deadline - now < near:
                            gap.deadline = now + timeout_s
                        if isinstance(event, Delta):
                            if event.text:
                                self.delivered = True
                                await self._on_piece(event.text)
                        elif isinstance(event, Head):
                            on_head(event.rate_limit)
                            on_head = _told_already
                        else:
                            on_head(event.rate_limit)  # no Head came (a fake upstream)
                            return event
                if gap.cancelled_caught:
                    raise UpstreamTimeout(f"the upstream stream was silent for {timeout_s:g} s")
                raise UpstreamUnavailable("the upstream stream ended before its last event")
        except UpstreamError as error:
            if self.delivered:
                error.transient = False  # the reader has part of the answer: never retried
            raise


def _told_already(rate_limit: RateLimitInfo | None) -> None:
    """``on_head`` after the Head: the budget has been told already."""
