"""The one rate gate every upstream call passes: 429 closures and proactive pacing."""

from __future__ import annotations

import trio

# Pace a little under the reported rate so clock skew between us and the upstream does not
# turn into 429s.
_PACING_MARGIN = 0.97


class RateGate:
    """Shared by all actors, so they wait together instead of stampeding the upstream.

    * ``close_for(s)``: a 429 that exhausted the shared budget closes the gate for everyone
      until its Retry-After.
    * ``observe(limit, remaining)``: from OpenAI's ``x-ratelimit-*-requests`` headers. While
      less than a second's worth of requests remains, calls are paced evenly at the limit's
      rate instead of running into 429s; pacing stops once the budget has recovered.

    ``wait()`` returns when the caller may start its call. Cancelling it just stops waiting.
    """

    def __init__(self) -> None:
        self._opens_at = 0.0
        self._interval = 0.0  # seconds between call starts while pacing; 0 when not pacing
        self._next_start = 0.0
        self.closures = 0
        self.waiting = 0

    def close_for(self, seconds: float) -> None:
        """Close the gate for ``seconds`` from now (never shortens a longer closure)."""
        opens_at = trio.current_time() + seconds
        if opens_at > self._opens_at:
            if self.is_open():
                self.closures += 1
            self._opens_at = opens_at

    def observe(self, limit: int, remaining: int) -> None:
        """Take in the request budget the upstream reported with a response."""
        if limit <= 0:
            return
        per_second = max(1.0, limit / 60)
        if remaining < per_second:
            self._interval = 60 / limit / _PACING_MARGIN
        elif remaining > 2 * per_second:
            self._interval = 0.0

    @property
    def pacing(self) -> bool:
        return self._interval > 0

    def is_open(self) -> bool:
        return trio.current_time() >= self._opens_at

    def remaining(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self._opens_at - trio.current_time())

    async def wait(self) -> None:
        """Return once the gate is open and, while pacing, this caller's turn has come."""
        self.waiting += 1
        try:
            while True:
                now = trio.current_time()
                if self._opens_at > now:
                    # Sleep and look again: another 429 may have moved the opening further out.
                    await trio.sleep(self._opens_at - now)
                    continue
                if self._interval:
                    start = max(now, self._next_start)
                    self._next_start = start + self._interval
                    if start > now:
                        await trio.sleep(start - now)
                return
        finally:
            self.waiting -= 1
