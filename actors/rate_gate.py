"""The one rate gate every upstream call passes: 429 closures and the request budget.

OpenAI reports the request budget with every answer (``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests``). The gate keeps a local mirror of that budget, a token
bucket refilled at the reported rate, and lets a call start only when the mirror has a token,
so calls are paced to the budget instead of running into 429s.

Callers that cannot start at once wait in one line, first come, first served; one pacer task
(:meth:`RateGate.run`) releases them one at a time when a call may start. Nobody polls: in a
429 storm only the pacer wakes, once per call let through.
"""

from __future__ import annotations

import math
from collections import deque

import trio

from .stats import GateStats
from .upstream import RateLimitInfo

# Refill a little slower than the reported rate so clock skew between us and the upstream
# does not turn into 429s.
_PACING_MARGIN = 0.97
# Until the upstream has answered once we know nothing of its budget: calls start at most
# one per _PROBE_SPACING_S then (200 a second), so a burst at start-up cannot overrun a budget
# before its first answer (a stream's head) reports it. A steady arrival of users hardly
# notices; one call at a time instead held the users of the first second of bench ``many``
# (1 s upstream latency) for that second: p99 overhead 126 ms -> 2.1 s.
_PROBE_SPACING_S = 0.005
# The shortest the pacer sleeps waiting for a token, so rounding cannot make it spin.
_MIN_TOKEN_WAIT_S = 1e-3


class _Waiter:
    """One caller in the line: released by the pacer with its ticket, or gone (cancelled)."""

    __slots__ = ("gone", "released", "ticket")

    def __init__(self) -> None:
        self.released = trio.Event()
        self.ticket = 0
        self.gone = False


class RateGate:
    """Shared by all actors, so they wait together instead of stampeding the upstream.

    * ``close_for(s)``: a 429 that exhausted the shared budget closes the gate for everyone
      until its Retry-After.
    * ``observe(limit, remaining, ticket)``: the budget an answer reported. From then on
      calls start only when the local mirror of the budget has a token.
    * ``refund()``: the call that took a token was refused without being counted (a 429
      with budget left), so its token is given back.

    ``wait()`` returns when the caller may start its call; it needs the pacer, ``run``,
    running in a nursery. Cancelling ``wait()`` takes the caller out of the line.
    """

    def __init__(self) -> None:
        self._opens_at = 0.0
        self.closures = 0
        self._rate = 0.0  # tokens per second; 0 while no budget is known
        self._capacity = 1.0
        self._tokens = 0.0
        self._refilled_at = 0.0
        self._answered = False  # the upstream has answered at least once
        self._next_probe = 0.0
        self._starts = 0  # calls let through so far; each call's number is its ticket
        self._line: deque[_Waiter] = deque()
        self.waiting = 0  # callers in the line, not counting those who left it
        self._changed = trio.Event()  # wakes the pacer: someone queued, or the budget grew

    # What the upstream said

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
        if not self._answered:
            self._answered = True
            self._changed.set()

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
        self._changed.set()

    def answer_to(self, ticket: int, rate_limit: RateLimitInfo | None) -> None:
        """The upstream answered call ``ticket`` (a stream: its head), reporting ``rate_limit``
        (None: no budget). Pacing follows the budget from now on; probing ends either way."""
        if rate_limit is not None:
            self.observe(rate_limit.limit, rate_limit.remaining, ticket)
        else:
            self.answered()

    def refund(self) -> None:
        """Give back the token of a call the upstream did not count."""
        if self.pacing:
            self._tokens = min(self._capacity, self._tokens + 1)
            self._changed.set()

    # State

    @property
    def pacing(self) -> bool:
        """True once a budget is known: calls then wait for a token."""
        return self._rate > 0

    def is_open(self) -> bool:
        return trio.current_time() >= self._opens_at

    def remaining(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self._opens_at - trio.current_time())

    def stats(self) -> GateStats:
        """A snapshot for ``/debug`` and ``/metrics``; never awaits."""
        self._refill()
        return GateStats(
            open=self.is_open(),
            opens_in_s=round(self.remaining(), 3),
            closures=self.closures,
            waiting=self.waiting,
            pacing=self.pacing,
            budget_per_s=round(self._rate, 3) if self._rate else None,
            tokens=math.floor(self._tokens) if self._rate else None,
        )

    # Waiting and pacing

    async def wait(self) -> int:
        """Return once this caller may start its call; FIFO behind those already waiting.

        Returns the call's ticket, to hand back to :meth:`observe` with its answer. When
        nobody waits and a call may start now, returns at once without a checkpoint.
        """
        if not self._line and self._delay() == 0:
            return self._let_through()
        waiter = _Waiter()
        self._line.append(waiter)
        self.waiting += 1
        self._changed.set()
        try:
            await waiter.released.wait()
        except BaseException:
            if waiter.released.is_set():
                self.refund()  # let through, but the call will not start
            else:
                waiter.gone = True
                self.waiting -= 1
            raise
        return waiter.ticket

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """The pacer: release waiters one at a time, in line order, until cancelled."""
        task_status.started()
        while True:
            while self._line and self._line[0].gone:
                self._line.popleft()
            await self._top_up()
            delay = self._delay() if self._line else math.inf
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._changed.wait()
                self._changed = trio.Event()
                continue
            waiter = self._line.popleft()
            self.waiting -= 1
            waiter.ticket = self._let_through()
            waiter.released.set()

    async def _top_up(self) -> None:
        """The seam for a budget shared with other processes (``actors/redis_gate.py``):
        fill ``_tokens`` before the pacer looks at them. Here the mirror refills itself."""

    def _delay(self) -> float:
        """Seconds until the next call may start (0: now)."""
        now = trio.current_time()
        if self._opens_at > now:
            return self._opens_at - now
        if not self._answered and self._next_probe > now:
            return self._next_probe - now
        if self._rate:
            self._refill()
            if self._tokens < 1:
                return max((1 - self._tokens) / self._rate, _MIN_TOKEN_WAIT_S)
        return 0.0

    def _let_through(self) -> int:
        if not self._answered:
            self._next_probe = trio.current_time() + _PROBE_SPACING_S
        if self._rate:
            self._tokens -= 1
        self._starts += 1
        return self._starts

    def _refill(self) -> None:
        now = trio.current_time()
        if self._rate:
            elapsed = now - self._refilled_at
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._refilled_at = now
