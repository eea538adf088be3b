"""Test doubles that stand in for the upstream where no HTTP is wanted.

Each implements the `actors.upstream.Upstream` protocol: ``complete``, ``stream`` (by
completing, then replaying the answer word by word) and ``aclose``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager

import trio

from actors.upstream import ChatRequest, Completion, Delta, StreamEvent


class _StreamsByCompleting:
    """``stream`` as the fakes do it: ``complete`` (its errors raise on entering), then one
    `Delta` per word of the answer and the `Completion`."""

    async def complete(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        completion = await self.complete(request)
        async with aclosing(_replay(completion)) as events:
            yield events

    async def aclose(self) -> None:
        pass


async def _replay(completion: Completion) -> AsyncGenerator[StreamEvent, None]:
    for index, word in enumerate(completion.content.split(" ")):
        await trio.lowlevel.checkpoint()
        yield Delta(word if index == 0 else " " + word)
    yield completion


class ScriptedUpstream(_StreamsByCompleting):
    """Answers like the simulator, or raises the errors it is given, in order."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        await trio.sleep(0.01)
        if self.errors:
            raise self.errors.pop(0)
        last = request.messages[-1]["content"]
        return Completion(f"re: {last} ({len(request.messages)})", "m", {"total_tokens": 1})


class HangingUpstream(_StreamsByCompleting):
    """Never answers: the call only ends when it is cancelled."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class TimedUpstream(_StreamsByCompleting):
    """Records the trio time of every call and answers with the scripted errors in turn."""

    def __init__(self, *errors: Exception, latency: float = 0.0) -> None:
        self.errors = list(errors)
        self.started: list[float] = []
        self.latency = latency
        self.in_flight = 0
        self.peak_in_flight = 0

    async def complete(self, request: ChatRequest) -> Completion:
        self.started.append(trio.current_time())
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await trio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        if self.errors:
            error = self.errors.pop(0)
            if error is not None:
                raise error
        return Completion("ok", "m", None)
