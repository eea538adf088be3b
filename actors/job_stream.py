"""A job's upstream call, streamed: :func:`stream_completion`.

Stands in for a streaming path of :class:`~actors.upstream_caller.UpstreamCaller` (not on
this branch yet) and keeps its rules: every attempt passes the shared rate gate and the
caller's ``upstream.max_concurrency`` limiter; a 429 closes the gate as in ``_attempt``;
tenacity retries transient failures, but only before the first delta reached the job; the
retry budget ``upstream.max_retry_s`` and the per-attempt ``upstream.timeout_s`` bound the
wait for the first delta, after which the job's own ``jobs.max_duration_s`` bounds the rest.
When the caller gains a ``stream`` method, the job should call that instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import trio
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from .errors import (
    UpstreamError,
    UpstreamNotConfigured,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .upstream import ChatRequest, Completion, Delta
from .upstream_caller import CallTimings, UpstreamCaller

log = logging.getLogger("actorchat.upstream")


async def stream_completion(
    caller: UpstreamCaller,
    request: ChatRequest,
    *,
    on_delta: Callable[[str], None],
    key: str = "",
    on_activity: Callable[[str], None] | None = None,
    timings: CallTimings | None = None,
) -> Completion:
    """Stream a completion, calling ``on_delta`` with each piece; return the whole answer.

    Raises the last :class:`UpstreamError` when attempts run out or a failure comes after the
    first delta (never retried: the pieces are already out), :class:`UpstreamTimeout` when
    ``max_retry_s`` passes before the first delta. Cancelling closes the upstream response.
    """
    if caller.upstream is None:
        raise UpstreamNotConfigured(
            "no upstream is configured: set OPENAI_API_KEY (upstream.provider is 'openai')"
        )
    timings = timings if timings is not None else CallTimings()
    report = on_activity or (lambda activity: None)
    config = caller.config
    delivered = False

    def first_delta() -> None:
        nonlocal delivered
        delivered = True
        budget.deadline = math.inf  # the retry budget bounds only the wait for the first piece

    def retryable(error: BaseException) -> bool:
        return isinstance(error, UpstreamError) and error.transient and not delivered

    def before_sleep(state: object) -> None:
        caller.retries += 1
        report(f"backing off after attempt {timings.attempts}")
        log.warning("streamed upstream attempt %d for %s failed; retrying",
                    timings.attempts, key[:8] or "-")

    with trio.move_on_after(config.max_retry_s) as budget:
        retrying = AsyncRetrying(
            sleep=trio.sleep,
            stop=stop_after_attempt(config.max_attempts),
            wait=caller._wait,  # noqa: SLF001 - the caller's backoff, honouring Retry-After
            retry=retry_if_exception(retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await _attempt(caller, request, timings, report, on_delta, first_delta)
    last_error = timings.last_error
    if isinstance(last_error, UpstreamRateLimited):
        raise UpstreamRateLimited(
            "the upstream kept rate limiting until the retry budget ran out",
            retry_after=max(1.0, caller.gate.remaining()),
        )
    raise UpstreamTimeout(
        f"no answer from the upstream within {config.max_retry_s:g} s"
        + (f" (last error: {last_error.message})" if last_error else "")
    )


async def _attempt(
    caller: UpstreamCaller, request: ChatRequest, timings: CallTimings,
    report: Callable[[str], None], on_delta: Callable[[str], None],
    first_delta: Callable[[], None],
) -> Completion:
    """One streamed attempt, with the gate and limiter bookkeeping of the caller's own."""
    assert caller.upstream is not None
    timings.attempts += 1
    queued_at = trio.current_time()
    if not caller.gate.is_open():
        report("waiting at rate gate")
    ticket = await caller.gate.wait()
    async with caller._limiter:  # noqa: SLF001 - the one max_concurrency limiter
        started = trio.current_time()
        timings.gate_s += started - queued_at
        report(f"upstream attempt {timings.attempts}")
        caller.in_flight += 1
        try:
            with trio.move_on_after(caller.config.timeout_s) as head:
                async with caller.upstream.stream(request) as events:
                    async for event in events:
                        if isinstance(event, Delta):
                            if head.deadline != math.inf:
                                head.deadline = math.inf
                                first_delta()
                            on_delta(event.text)
                        else:
                            completion = event
                            break
                    else:
                        raise UpstreamUnavailable("the upstream's stream ended without its answer")
            if head.cancelled_caught:
                raise UpstreamTimeout(
                    f"the upstream did not answer within {caller.config.timeout_s:g} s"
                )
        except UpstreamRateLimited as error:
            timings.last_error = error
            caller.calls["rate_limited"] += 1
            if error.rate_limit is not None:
                caller.gate.observe(error.rate_limit.limit, error.rate_limit.remaining, ticket)
            if error.rate_limit is None or error.rate_limit.remaining == 0:
                caller.gate.close_for(caller._retry_delay(error, timings.attempts))  # noqa: SLF001
            else:
                caller.gate.refund()
            raise
        except UpstreamError as error:
            timings.last_error = error
            caller.calls[error.type] += 1
            caller.gate.answered()
            raise
        finally:
            caller.in_flight -= 1
            timings.upstream_s += trio.current_time() - started
    caller.calls["ok"] += 1
    if completion.rate_limit is not None:
        caller.gate.observe(completion.rate_limit.limit, completion.rate_limit.remaining, ticket)
    else:
        caller.gate.answered()
    return completion
