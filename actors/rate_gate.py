"""The one rate gate every upstream call passes: 429 closures and the request budget.

OpenAI reports the request budget with every answer (``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests``). The gate keeps a local mirror of that budget, a token
bucket refilled at the reported rate, and lets a call start only when the mirror has a token,
so calls are paced to the budget instead of running into 429s.
"""

from __future__ import annotations

import math

import trio

# Refill a little slower than the reported rate so clock skew between us and the upstream
# does not turn into 429s.
_PACING_MARGIN = 0.97
# Until the upstream has answered once we know nothing of its budget: calls start at most
# one per _PROBE_SPACING_S then (200 a second), so a burst at start-up cannot overrun a budget
# before its first answer reports it. A steady arrival of users hardly notices.
_PROBE_SPACING_S = 0.005


class RateGate:
    """Shared by all actors, so they wait together instead of stampeding the upstream.

    * ``close_for(s)``: a 429 that exhausted the shared budget closes the gate for everyone
      until its Retry-After.
    * ``observe(limit, remaining)``: the budget an answer reported. From then on calls start
      only when the local mirror of the budget has a token.
    * ``refund()``: the call that took the last token was refused without being counted (a
      429 with budget left), so its token is given back.

    ``wait()`` returns when the caller may start its call and takes a token if a budget is
    known. Cancelling it just stops waiting.
    """

    def __init__(self) -> None:
        self._opens_at = 0.0
        self.closures = 0
        self.waiting = 0
        self._rate = 0.0  # tokens per second; 0 while no budget is known
        self._capacity = 1.0
        self._tokens = 0.0
        self._refilled_at = 0.0
        self._answered = trio.Event()  # the upstream has answered at least once
        self._next_probe = 0.0
        self._starts = 0  # calls let through so far; each call's number is its ticket

    def close_for(self, seconds: float) -> None:
        """Close the gate for ``seconds`` from now (never shortens a longer closure)."""
        opens_at = trio.current_time() + seconds
        if opens_at > self._opens_at:
            if self.is_open():
                self.closures += 1
            self._opens_at = opens_at
        self._tokens = 0.0

    def answered(self) -> None:
        """The upstream answered (any answer): the probing phase is over."""
        self._answered.set()

    def observe(self, limit: int, remaining: int, ticket: int | None = None) -> None:
        """Take in the request budget the upstream reported with the answer to call ``ticket``.

        The calls let through after that one are not in the upstream's count yet, so they are
        taken off what it reports; the mirror may go negative, a debt paid back by refilling.
        """
        self.answered()
        if limit <= 0:
            return
        self._refill()
        estimate = remaining - (self._starts - ticket if ticket is not None else 0)
        self._tokens = min(self._tokens, float(estimate)) if self.pacing else float(estimate)
        self._rate = limit / 60 * _PACING_MARGIN
        self._capacity = max(self._capacity, remaining + 1.0)

    def refund(self) -> None:
        if self.pacing:
            self._tokens = min(self._capacity, self._tokens + 1)

    @property
    def pacing(self) -> bool:
        """True once a budget is known: calls then wait for a token."""
        return self._rate > 0

    def is_open(self) -> bool:
        return trio.current_time() >= self._opens_at

    def remaining(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self._opens_at - trio.current_time())

    def _refill(self) -> None:
        now = trio.current_time()
        if self._rate:
            elapsed = now - self._refilled_at
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._refilled_at = now

    async def wait(self) -> int:
        """Return once the gate is open and, with a known budget, a token is taken.

        Returns the call's ticket, to hand back to :meth:`observe` with its answer.
        """
        self.waiting += 1
        try:
            if not self._answered.is_set():
                now = trio.current_time()
                start = max(now, self._next_probe)
                self._next_probe = start + _PROBE_SPACING_S
                if start > now:
                    with trio.move_on_after(start - now):  # the first answer ends the spacing
                        await self._answered.wait()
            while True:
                now = trio.current_time()
                if self._opens_at > now:
                    # Sleep and look again: another 429 may have moved the opening further out.
                    await trio.sleep(self._opens_at - now)
                    continue
                if not self._rate:
                    break
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    break
                await trio.sleep(max((1 - self._tokens) / self._rate, 1e-3))
        finally:
            self.waiting -= 1
        self._starts += 1
        return self._starts

    def describe(self) -> dict[str, object]:
        """The gate's state for the debug endpoint and metrics."""
        self._refill()
        return {
            "open": self.is_open(),
            "opens_in_s": round(self.remaining(), 3),
            "closures": self.closures,
            "waiting": self.waiting,
            "pacing": self.pacing,
            "budget_per_s": round(self._rate, 3) if self._rate else None,
            "tokens": math.floor(self._tokens) if self._rate else None,
        }
