"""Every upstream call goes through here: retries, the shared rate gate, the concurrency cap.

tenacity's ``AsyncRetrying`` with ``trio.sleep`` retries 429, 5xx, timeouts and connection
errors with exponential backoff and jitter, and never 400/401/403/404. The overall budget is
a ``trio.move_on_after(max_retry_s)`` rather than tenacity's ``stop_after_delay``, which reads
the wall clock and so would not follow Trio's (mock) clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

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
from .upstream import ChatRequest, Completion, Upstream

log = logging.getLogger("actorchat.supervisor")

# After a 429 the gate does the waiting; a little jitter spreads the callers released at once.
_GATE_JITTER_S = 0.05


class RateGate:
    """One gate shared by all actors: a 429 closes it for everyone until its Retry-After."""

    def __init__(self) -> None:
        self._opens_at = 0.0
        self.closures = 0
        self.waiting = 0

    def close_for(self, seconds: float) -> None:
        """Close the gate for ``seconds`` from now (never shortens a longer closure)."""
        opens_at = trio.current_time() + seconds
        if opens_at > self._opens_at:
            if self.is_open():
                self.closures += 1
            self._opens_at = opens_at

    def is_open(self) -> bool:
        return trio.current_time() >= self._opens_at

    def remaining(self) -> float:
        return max(0.0, self._opens_at - trio.current_time())

    async def wait(self) -> None:
        """Return once the gate is open; a closure extended meanwhile is waited for too."""
        self.waiting += 1
        try:
            # A loop, not an Event: another 429 may push the opening time further out.
            while (delay := self._opens_at - trio.current_time()) > 0:  # noqa: ASYNC110
                await trio.sleep(delay)
        finally:
            self.waiting -= 1


@dataclass(slots=True)
class CallTimings:
    """Where one call's time went, in seconds, for the Server-Timing header."""

    gate_s: float = 0.0
    upstream_s: float = 0.0
    attempts: int = 0
    last_error: UpstreamError | None = None


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, UpstreamError) and error.transient


class UpstreamSupervisor:
    """Calls the upstream with retries, the rate gate and at most ``max_concurrency`` in flight.

    ``upstream`` is None when no upstream is configured: every call then raises
    :class:`UpstreamNotConfigured`. Cancelling a call cancels the HTTP request in flight.
    """

    def __init__(self, upstream: Upstream | None, config: UpstreamConfig) -> None:
        self.upstream = upstream
        self.config = config
        self.gate = RateGate()
        self._limiter = trio.CapacityLimiter(config.max_concurrency)
        self.in_flight = 0
        self.calls: Counter[str] = Counter()  # one count per attempt, by outcome
        self.retries = 0
        self._backoff = wait_exponential_jitter(
            multiplier=config.backoff_initial_s,
            max=config.backoff_max_s,
            jitter=config.backoff_initial_s,
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
        if self.upstream is None:
            raise UpstreamNotConfigured(
                "no upstream is configured: set OPENAI_API_KEY (upstream.provider is 'openai')"
            )
        timings = timings if timings is not None else CallTimings()
        report = on_activity or (lambda activity: None)
        with trio.move_on_after(self.config.max_retry_s):
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
                    return await self._attempt(request, timings, report)
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

    async def _attempt(
        self, request: ChatRequest, timings: CallTimings, report: Callable[[str], None]
    ) -> Completion:
        assert self.upstream is not None
        timings.attempts += 1
        queued_at = trio.current_time()
        if not self.gate.is_open():
            report("waiting at rate gate")
        await self.gate.wait()
        async with self._limiter:
            started = trio.current_time()
            timings.gate_s += started - queued_at
            report(f"upstream attempt {timings.attempts}")
            self.in_flight += 1
            try:
                with trio.move_on_after(self.config.timeout_s) as deadline:
                    completion = await self.upstream.complete(request)
                if deadline.cancelled_caught:
                    raise UpstreamTimeout(
                        f"the upstream did not answer within {self.config.timeout_s:g} s"
                    )
            except UpstreamRateLimited as error:
                timings.last_error = error
                self.calls["rate_limited"] += 1
                self.gate.close_for(
                    error.retry_after if error.retry_after is not None
                    else self.config.backoff_initial_s * 2 ** (timings.attempts - 1)
                )
                raise
            except UpstreamError as error:
                timings.last_error = error
                self.calls[error.type] += 1
                raise
            finally:
                self.in_flight -= 1
                timings.upstream_s += trio.current_time() - started
        self.calls["ok"] += 1
        return completion

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, UpstreamRateLimited):
            return _GATE_JITTER_S * (state.attempt_number % 3)
        return self._backoff(state)

    def _before_retry(
        self, state: RetryCallState, key: str, report: Callable[[str], None]
    ) -> None:
        self.retries += 1
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        report(f"backing off after attempt {state.attempt_number}")
        log.warning(
            "upstream attempt %d for %s failed (%s); retrying in %.2f s",
            state.attempt_number, key[:8] or "-", getattr(error, "message", error), delay,
        )

