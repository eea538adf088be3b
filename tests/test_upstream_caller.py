"""The retrying upstream caller and the rate gate, on Trio's mock clock: nothing really waits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from actors.config import UpstreamConfig
from actors.errors import (
    UpstreamNotConfigured,
    UpstreamRateLimited,
    UpstreamRefusedKey,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from actors.rate_gate import RateGate
from actors.upstream import ChatRequest, Completion, Head, RateLimitInfo, StreamEvent
from actors.upstream_caller import UpstreamCaller

from .fakes import HangingUpstream, TimedUpstream

REQUEST = ChatRequest([{"role": "user", "content": "hi"}], "m", 0.7)


@asynccontextmanager
async def running(upstream, **settings) -> AsyncIterator[UpstreamCaller]:
    """A caller with its rate gate's pacer running."""
    settings.setdefault("backoff_initial_s", 0.5)
    settings.setdefault("backoff_max_s", 8.0)
    caller = UpstreamCaller(upstream, UpstreamConfig(**settings))
    async with trio.open_nursery() as nursery:
        await nursery.start(caller.run)
        yield caller
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def paced(gate: RateGate) -> AsyncIterator[RateGate]:
    """The gate with its pacer running."""
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.run)
        yield gate
        nursery.cancel_scope.cancel()


class HeadThenSilence:
    """Streams its head, reporting ``rate_limit``, then nothing until cancelled."""

    def __init__(self, rate_limit: RateLimitInfo) -> None:
        self.rate_limit = rate_limit
        self.headed = trio.Event()

    async def complete(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        async def events() -> AsyncIterator[StreamEvent]:
            yield Head(self.rate_limit)
            self.headed.set()
            await trio.sleep_forever()

        yield events()

    async def aclose(self) -> None:
        pass


async def nothing(piece: str) -> None:
    pass


def unavailable() -> UpstreamUnavailable:
    return UpstreamUnavailable("upstream 503")


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


async def test_backoff_doubles_with_jitter_between_attempts(autojump_clock) -> None:
    upstream = TimedUpstream(unavailable(), unavailable(), unavailable())
    async with running(upstream, max_attempts=4) as calls:
        completion = await calls.complete(REQUEST)
    assert completion.content == "ok"
    waits = gaps(upstream.started)
    # wait = 0.5 * 2**(n-1) + uniform(0, 0.5)
    for wait, base in zip(waits, (0.5, 1.0, 2.0), strict=True):
        assert base <= wait <= base + 0.5
    assert calls.retries == 3
    assert calls.calls == {"upstream_unavailable": 3, "ok": 1}


async def test_a_call_that_succeeds_at_once_never_enters_tenacity(
    autojump_clock, monkeypatch
) -> None:
    # The first attempt runs bare (a measured saving, see UpstreamCaller._retry); tenacity
    # comes in only for a retry, with the failure as its attempt 1 (the test above).
    def no_tenacity(*args, **kwargs):
        raise AssertionError("tenacity was set up for a call that needed no retry")

    monkeypatch.setattr("actors.upstream_caller.AsyncRetrying", no_tenacity)
    async with running(TimedUpstream()) as calls:
        assert (await calls.complete(REQUEST)).content == "ok"
    assert (calls.calls, calls.retries) == ({"ok": 1}, 0)


async def test_backoff_never_exceeds_its_maximum(autojump_clock) -> None:
    upstream = TimedUpstream(*(unavailable() for _ in range(6)))
    async with running(upstream, max_attempts=7, backoff_max_s=1.5) as calls:
        await calls.complete(REQUEST)
    assert max(gaps(upstream.started)) <= 1.5 + 1e-9


async def test_retry_after_from_a_429_is_honoured(autojump_clock) -> None:
    upstream = TimedUpstream(UpstreamRateLimited("slow down", retry_after=3.0))
    async with running(upstream) as calls:
        await calls.complete(REQUEST)
    assert 3.0 <= gaps(upstream.started)[0] < 3.2


async def test_one_429_closes_the_gate_for_every_caller(autojump_clock) -> None:
    upstream = TimedUpstream(UpstreamRateLimited("slow down", retry_after=5.0), latency=0.1)
    async with running(upstream) as calls, trio.open_nursery() as nursery:
        nursery.start_soon(calls.complete, REQUEST)  # gets the 429 at t=0.1
        await trio.sleep(1.0)
        assert not calls.gate.is_open()
        assert calls.gate.closures == 1
        nursery.start_soon(calls.complete, REQUEST)  # another actor: waits at the gate
        await trio.testing.wait_all_tasks_blocked()
        assert calls.gate.waiting >= 1
    # both later calls started only once the gate opened at 0.1 + 5
    assert len(upstream.started) == 3
    assert all(started >= 5.1 for started in upstream.started[1:])


async def test_a_429_with_budget_left_delays_only_its_own_request(autojump_clock) -> None:
    limited = UpstreamRateLimited("slow down", retry_after=2.0,
                                  rate_limit=RateLimitInfo(limit=600, remaining=40))
    upstream = TimedUpstream(limited)
    async with running(upstream) as calls, trio.open_nursery() as nursery:
        nursery.start_soon(calls.complete, REQUEST)
        await trio.sleep(0.5)
        assert calls.gate.is_open()
        await calls.complete(REQUEST)  # not held back by the other request's 429
        assert trio.current_time() < 1.0
    assert 2.0 <= upstream.started[-1] < 2.2


async def test_max_attempts_is_honoured(autojump_clock) -> None:
    upstream = TimedUpstream(*(unavailable() for _ in range(10)))
    async with running(upstream, max_attempts=3) as calls:
        with pytest.raises(UpstreamUnavailable):
            await calls.complete(REQUEST)
    assert len(upstream.started) == 3


async def test_max_retry_time_is_honoured_and_the_429_surfaces(autojump_clock) -> None:
    upstream = TimedUpstream(
        *(UpstreamRateLimited("slow down", retry_after=10.0) for _ in range(100))
    )
    async with running(upstream, max_attempts=100, max_retry_s=25) as calls:
        with pytest.raises(UpstreamRateLimited) as limited:
            await calls.complete(REQUEST)
        assert 25 <= trio.current_time() < 25.1
    assert len(upstream.started) == 3  # at 0, 10 and 20 s
    assert limited.value.retry_after >= 1


@pytest.mark.parametrize(
    "error",
    [UpstreamRefusedKey("refused"), UpstreamRejected("bad request", 400),
     UpstreamRejected("no such model", 404)],
)
async def test_permanent_errors_fail_on_the_first_attempt(autojump_clock, error) -> None:
    upstream = TimedUpstream(error)
    async with running(upstream, max_attempts=5) as calls:
        with pytest.raises(type(error)):
            await calls.complete(REQUEST)
    assert len(upstream.started) == 1
    assert trio.current_time() == 0


async def test_each_attempt_times_out_and_the_request_ends_with_a_timeout(
    autojump_clock,
) -> None:
    upstream = HangingUpstream()
    async with running(upstream, timeout_s=2, max_attempts=3, backoff_initial_s=0.1,
                       backoff_max_s=0.1) as calls:
        with pytest.raises(UpstreamTimeout):
            await calls.complete(REQUEST)
        assert 6.2 - 1e-9 <= trio.current_time() <= 6.5
    assert upstream.calls == 3


async def test_the_overall_deadline_cuts_a_slow_attempt(autojump_clock) -> None:
    async with running(HangingUpstream(), timeout_s=100, max_retry_s=7) as calls:
        with pytest.raises(UpstreamTimeout):
            await calls.complete(REQUEST)
        assert trio.current_time() == pytest.approx(7)


async def test_calls_in_flight_are_capped(autojump_clock) -> None:
    upstream = TimedUpstream(latency=1.0)
    async with running(upstream, max_concurrency=2) as calls:
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(calls.complete, REQUEST)
        assert trio.current_time() == pytest.approx(3.0, abs=0.01)  # + the first calls' spacing
    assert upstream.peak_in_flight == 2
    assert calls.in_flight == 0


async def test_no_upstream_means_503_naming_the_key(autojump_clock) -> None:
    async with running(None) as calls:
        with pytest.raises(UpstreamNotConfigured, match="OPENAI_API_KEY"):
            await calls.complete(REQUEST)


async def test_a_budget_429_stops_everyone_until_retry_after_then_paces(autojump_clock) -> None:
    exhausted = UpstreamRateLimited("slow down", retry_after=0.5,
                                    rate_limit=RateLimitInfo(limit=1200, remaining=0))
    upstream = TimedUpstream(exhausted)
    async with running(upstream) as calls:
        await calls.complete(REQUEST)
    assert calls.gate.pacing
    assert 0.5 <= upstream.started[1] < 0.6


# The rate gate alone


async def test_the_gate_paces_calls_to_the_reported_budget(autojump_clock) -> None:
    async with paced(RateGate()) as gate:
        gate.observe(limit=600, remaining=2)  # 10 requests a second, two left now
        starts = []
        for _ in range(6):
            await gate.wait()
            starts.append(trio.current_time())
    assert starts[:2] == [0, 0]  # the two left go at once
    # then one per 1/10 s, refilled a little under the reported rate
    for gap in gaps(starts[1:]):
        assert 0.1 <= gap <= 0.11
    assert gate.pacing


async def test_a_429_with_budget_left_gives_its_token_back(autojump_clock) -> None:
    async with paced(RateGate()) as gate:
        gate.observe(limit=60, remaining=1)
        await gate.wait()
        gate.refund()
        await gate.wait()
        assert trio.current_time() == 0


async def test_until_the_first_answer_calls_start_at_most_200_a_second(autojump_clock) -> None:
    started: list[float] = []
    async with paced(RateGate()) as gate:

        async def call() -> None:
            await gate.wait()
            started.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(call)
            await trio.sleep(0.0201)
            assert len(started) == 5  # at 0, 5, 10, 15 and 20 ms
            gate.observe(limit=6000, remaining=100)  # the first answer: no more spacing
    assert started[5:] == [pytest.approx(0.0201)] * 5
    assert not gate.stats().tokens < 90


async def test_a_stream_reports_its_budget_to_the_gate_at_its_head(autojump_clock) -> None:
    # Were the budget taken in only when the stream ends, every call waiting at the gate
    # meanwhile would go at once: the first answer has ended the start-up probing.
    upstream = HeadThenSilence(RateLimitInfo(limit=600, remaining=0))
    async with running(upstream) as calls, trio.open_nursery() as nursery:
        nursery.start_soon(partial(calls.stream, REQUEST, on_piece=nothing))
        with trio.fail_after(1):
            await upstream.headed.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert calls.gate.pacing
        assert calls.gate.stats().tokens == 0  # none left, as the head said
        nursery.cancel_scope.cancel()


async def test_after_any_answer_unpaced_calls_go_at_once(autojump_clock) -> None:
    async with paced(RateGate()) as gate:
        gate.answered()  # an upstream that reports no budget
        for _ in range(6):
            await gate.wait()
        assert trio.current_time() == 0
    assert not gate.pacing


async def test_calls_sent_after_the_answered_one_are_taken_off_the_budget(
    autojump_clock,
) -> None:
    async with paced(RateGate()) as gate:
        gate.answered()
        tickets = [await gate.wait() for _ in range(6)]  # no budget known yet: all go at once
        assert tickets == [1, 2, 3, 4, 5, 6]
        # the answer to call 1 says 3 remain, but calls 2-6 were sent since: 2 tokens owed
        gate.observe(limit=600, remaining=3, ticket=1)
        await gate.wait()
        # 3 tokens at 10/s x 0.97 to pay the debt and have one to spend
        assert trio.current_time() == pytest.approx(3 / (10 * 0.97), rel=0.01)


async def test_waiters_are_let_through_first_come_first_served(autojump_clock) -> None:
    order: list[int] = []
    async with paced(RateGate()) as gate:
        gate.observe(limit=60, remaining=0)  # one call a second (less 3%), none left now

        async def call(number: int) -> None:
            await gate.wait()
            order.append(number)

        async with trio.open_nursery() as nursery:
            for number in range(20):
                nursery.start_soon(call, number)
                await trio.testing.wait_all_tasks_blocked()  # each joins the line in turn
    assert order == list(range(20))


async def test_in_a_429_storm_every_waiter_gets_through_in_its_turn(autojump_clock) -> None:
    arrived: dict[int, float] = {}
    let_through: dict[int, tuple[int, float]] = {}  # number -> (ticket, when)
    async with paced(RateGate()) as gate:
        gate.observe(limit=600, remaining=5)

        async def call(number: int) -> None:
            arrived[number] = trio.current_time()
            ticket = await gate.wait()
            let_through[number] = (ticket, trio.current_time())

        async with trio.open_nursery() as nursery:
            for number in range(60):
                nursery.start_soon(call, number)
                await trio.testing.wait_all_tasks_blocked()
                if number % 10 == 9:
                    gate.close_for(0.5)  # another 429 that exhausted the budget
                await trio.sleep(0.02)
    # tickets number the calls in the order they were let through: the order they came in
    assert [let_through[number][0] for number in range(60)] == list(range(1, 61))
    # 10 calls a second, each in its turn: none waits longer than the line ahead of it needs
    longest = max(when - arrived[number] for number, (_, when) in let_through.items())
    assert longest < 60 / 10 * 1.1


async def test_a_waiter_that_leaves_the_line_holds_up_no_one(autojump_clock) -> None:
    tickets: dict[str, int] = {}
    async with paced(RateGate()) as gate:
        gate.answered()
        gate.close_for(1.0)

        async def call(name: str) -> None:
            tickets[name] = await gate.wait()  # tickets number the calls let through, in order

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "first")
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.5):
                await gate.wait()  # gives up before the gate opens
            nursery.start_soon(call, "third")
            await trio.testing.wait_all_tasks_blocked()
            assert gate.waiting == 2
    assert tickets == {"first": 1, "third": 2}
    assert trio.current_time() == pytest.approx(1.0)
    assert gate.waiting == 0
