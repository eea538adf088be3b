"""The retrying upstream caller: every upstream call goes through here.

tenacity's ``AsyncRetrying`` with ``trio.sleep``, used as its documentation shows, retries
429, 5xx, timeouts and connection errors with exponential backoff and jitter, and never
400/401/403/404. The first attempt runs before tenacity is set up (measured: see
:meth:`UpstreamCaller._retry`). The overall budget is a ``trio.move_on_after(max_retry_s)``
rather than tenacity's ``stop_after_delay``, which reads the wall clock and so would not
follow Trio's (mock) clock. Every attempt passes the shared rate gate and
``upstream.max_concurrency`` slots (a ``trio.CapacityLimiter``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .config import UpstreamConfig
from .errors import (
    UpstreamError,
    UpstreamNotConfigured,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from .rate_gate import RateGate
from .stats import UpstreamStats
from .streamed_attempt import OnHead, OnPiece, StreamedAttempt
from .upstream import ChatRequest, Completion, Upstream

log = logging.getLogger("actorchat.upstream")

# After a 429 that closed the gate, the gate does the waiting; a little jitter spreads the
# callers it releases at once.
_GATE_JITTER_S = 0.05


@dataclass(slots=True)
class CallTimings:
    """Where one call's time went, in seconds, for the Server-Timing header."""

    gate_s: float = 0.0
    upstream_s: float = 0.0
    attempts: int = 0
    last_error: UpstreamError | None = None


# One attempt's call: the request, the attempt's deadline scope, the whole call's budget
# scope (``max_retry_s``; a stream lifts both once the upstream has answered) and what to
# call, once, with the budget the answer reports, as soon as it is known.
_Call = Callable[[ChatRequest, trio.CancelScope, trio.CancelScope, OnHead],
                 Awaitable[Completion]]


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, UpstreamError) and error.transient


class UpstreamCaller:
    """Calls the upstream with retries, the rate gate and at most ``max_concurrency`` in flight.

    ``upstream`` is None when no upstream is configured: every call then raises
    :class:`UpstreamNotConfigured`. The gate's pacer must run (``await nursery.start(
    caller.run)``) for calls that have to wait at the gate. Cancelling a call cancels the
    HTTP request in flight. ``gate`` replaces the process's own rate gate (with Redis, one
    whose budget and closures every instance shares).
    """

    def __init__(self, upstream: Upstream | None, config: UpstreamConfig,
                 gate: RateGate | None = None) -> None:
        self.upstream = upstream
        self.config = config
        self.gate = gate if gate is not None else RateGate()
        self._limiter = trio.CapacityLimiter(config.max_concurrency)
        self.in_flight = 0
        self.calls: Counter[str] = Counter()  # one count per attempt, by outcome
        self.retries = 0
        self._backoff = wait_exponential_jitter(
            multiplier=config.backoff_initial_s, max=config.backoff_max_s,
            jitter=config.backoff_initial_s)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Run the rate gate's pacer until cancelled."""
        await self.gate.run(task_status=task_status)

    def stats(self, label: str) -> UpstreamStats:
        """A snapshot for ``/debug`` and ``/metrics``; never awaits."""
        return UpstreamStats(
            label=label,
            configured=self.upstream is not None,
            in_flight=self.in_flight,
            calls=dict(sorted(self.calls.items())),
            retries=self.retries,
            gate=self.gate.stats(),
        )

    async def complete(
        self,
        request: ChatRequest,
        *,
        key: str = "",
        on_activity: Callable[[str], None] | None = None,
        timings: CallTimings | None = None,
    ) -> Completion:
        """Get a completion, retrying transient failures within the configured budget.

        Raises the last :class:`UpstreamError` when attempts run out, or
        :class:`UpstreamTimeout` (or the pending 429) when ``max_retry_s`` passes first.
        """
        return await self._call(self._complete_once, request, key, on_activity, timings)

    async def stream(
        self,
        request: ChatRequest,
        on_piece: OnPiece,
        *,
        key: str = "",
        on_activity: Callable[[str], None] | None = None,
        timings: CallTimings | None = None,
    ) -> Completion:
        """Stream a completion: ``await on_piece(text)`` for each piece, then return it whole.

        Retried as :meth:`complete` is, but only until the first piece went to ``on_piece``:
        after that an error is raised as it is, never retried. ``upstream.timeout_s`` bounds
        the wait for the response head and then each gap between events; ``max_retry_s``
        bounds the attempts until a head arrives, not how long an answer may stream. An
        error raised by ``on_piece`` (its reader went away) ends the stream, raised as is.
        Cancelling this closes the upstream stream; no task is left behind.
        """
        attempt = StreamedAttempt(self.upstream, on_piece, self.config.timeout_s)
        return await self._call(attempt, request, key, on_activity, timings)

    async def _complete_once(self, request: ChatRequest, deadline: trio.CancelScope,
                             budget: trio.CancelScope, on_head: OnHead) -> Completion:
        assert self.upstream is not None
        completion = await self.upstream.complete(request)
        on_head(completion.rate_limit)
        return completion

    async def _call(
        self, call: _Call, request: ChatRequest, key: str,
        on_activity: Callable[[str], None] | None, timings: CallTimings | None,
    ) -> Completion:
        if self.upstream is None:
            raise UpstreamNotConfigured(
                "no upstream is configured: set OPENAI_API_KEY (upstream.provider is 'openai')"
            )
        timings = timings if timings is not None else CallTimings()
        report = on_activity or (lambda activity: None)
        with trio.move_on_after(self.config.max_retry_s) as budget:
            # The first attempt runs without tenacity: see _retry for why and what it costs.
            try:
                return await self._attempt(call, request, timings, report, key, budget)
            except UpstreamError as error:
                if not error.transient or self.config.max_attempts == 1:
                    raise
                first_failure = error
            return await self._retry(call, request, timings, report, key, budget,
                                     first_failure)
        last_error = timings.last_error
        if isinstance(last_error, UpstreamRateLimited):
            raise UpstreamRateLimited(
                "the upstream kept rate limiting until the retry budget ran out",
                retry_after=max(1.0, self.gate.remaining()),
            )
        raise UpstreamTimeout(
            f"no answer from the upstream within {self.config.max_retry_s:g} s"
            + (f" (last error: {last_error.message})" if last_error else "")
        )

    async def _retry(
        self, call: _Call, request: ChatRequest, timings: CallTimings,
        report: Callable[[str], None], key: str, budget: trio.CancelScope,
        first_failure: UpstreamError,
    ) -> Completion:
        """Attempts 2 and on, with tenacity's ``AsyncRetrying`` used as documented.

        Attempt 1 ran bare and failed with ``first_failure``; it is handed to tenacity as
        tenacity's own attempt 1, so the waits, the logs and the counts are the ones tenacity
        gives when it makes every attempt (pinned by
        ``test_a_call_that_succeeds_at_once_never_enters_tenacity`` and the backoff tests).
        Why, measured: a pass through ``AsyncRetrying`` costs even when the first attempt
        succeeds (its iteration runs wrapped callbacks after every attempt, and its objects
        leave garbage behind). 64 sessions x 300 turns in-process against an instant
        upstream: 80 to 120 us of CPU per turn with the first attempt bare, 220 to 310 us
        with every call through tenacity. Most calls succeed at once.
        """
        pending: UpstreamError | None = first_failure
        retrying = AsyncRetrying(
            sleep=trio.sleep,
            stop=stop_after_attempt(self.config.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            before_sleep=lambda state: self._before_retry(state, key, report),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if pending is not None:
                    replayed, pending = pending, None
                    raise replayed
                completion = await self._attempt(call, request, timings, report, key, budget)
        return completion

    async def _attempt(
        self, call: _Call, request: ChatRequest, timings: CallTimings,
        report: Callable[[str], None], key: str, budget: trio.CancelScope,
    ) -> Completion:
        assert self.upstream is not None
        timings.attempts += 1
        queued_at = trio.current_time()
        if not self.gate.is_open():
            report("waiting at rate gate")
        ticket = await self.gate.wait()
        await self._take_slot()
        try:
            started = trio.current_time()
            timings.gate_s += started - queued_at
            report(f"upstream attempt {timings.attempts}")
            log.debug("upstream attempt %d for %s", timings.attempts, key[:8] or "-")
            self.in_flight += 1
            try:
                with trio.move_on_after(self.config.timeout_s) as deadline:
                    completion = await call(request, deadline, budget,
                                            partial(self.gate.answer_to, ticket))
                if deadline.cancelled_caught:
                    raise UpstreamTimeout(
                        f"the upstream did not answer within {self.config.timeout_s:g} s"
                    )
            except UpstreamRateLimited as error:
                timings.last_error = error
                self.calls["rate_limited"] += 1
                self.gate.answer_to(ticket, error.rate_limit)
                if _exhausts_shared_budget(error):
                    self.gate.close_for(self._retry_delay(error, timings.attempts))
                else:
                    self.gate.refund()  # the upstream did not count this call
                raise
            except UpstreamError as error:
                timings.last_error = error
                self.calls[error.type] += 1
                self.gate.answered()
                raise
            finally:
                self.in_flight -= 1
                timings.upstream_s += trio.current_time() - started
        finally:
            self._limiter.release()
        self.calls["ok"] += 1
        return completion

    async def _take_slot(self) -> None:
        """A ``max_concurrency`` slot; a free one without ``acquire``'s checkpoint (a task
        switch: 7-9 us -> ~1 us, 3.50 M -> 3.49 M instructions a server turn with the fake
        upstream). ``test_calls_in_flight_are_capped`` pins the bound."""
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            await self._limiter.acquire()

    def _retry_delay(self, error: UpstreamRateLimited, attempt: int) -> float:
        if error.retry_after is not None:
            return error.retry_after
        return min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (attempt - 1))

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, UpstreamRateLimited):
            if _exhausts_shared_budget(error):
                return _GATE_JITTER_S * (state.attempt_number % 3)
            return self._retry_delay(error, state.attempt_number)
        return self._backoff(state)

    def _before_retry(self, state: RetryCallState, key: str,
                      report: Callable[[str], None]) -> None:
        self.retries += 1
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        report(f"backing off after attempt {state.attempt_number}")
        log.warning(
            "upstream attempt %d for %s failed (%s); retrying in %.2f s",
            state.attempt_number, key[:8] or "-", getattr(error, "message", error), delay,
        )


def _exhausts_shared_budget(error: UpstreamRateLimited) -> bool:
    """True unless the 429 said requests remain: then only this request was limited."""
    return error.rate_limit is None or error.rate_limit.remaining == 0
