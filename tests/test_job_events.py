"""Job events without HTTP, on Trio's mock clock: slow listeners, late listeners, retries only
before the first delta, and a job read from the store."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import trio
import trio.testing

from actors.config import build_settings
from actors.errors import UpstreamUnavailable
from actors.job_events import (
    JobEnded,
    JobEvent,
    JobEvents,
    ListenerDropped,
    StatusChanged,
    TextDelta,
)
from actors.lifetime import given_upstream, open_chat_service
from actors.service import ChatService
from actors.store import JobRecord, MemoryStore
from actors.upstream import ChatRequest, Delta, StreamEvent

from .fakes import ScriptedUpstream


@asynccontextmanager
async def service_with(upstream: Any, store: MemoryStore | None = None,
                       **jobs: Any) -> AsyncIterator[ChatService]:
    settings = build_settings({"jobs": jobs, "upstream": {"timeout_s": 100, "max_retry_s": 100,
                                                          "max_attempts": 3}}, environ={})
    async with open_chat_service(settings, open_upstream=given_upstream(upstream),
                                 store=store or MemoryStore()) as service:
        yield service


async def everything(listener: Any) -> list[JobEvent]:
    return [event async for event in listener]


class BreaksMidStream(ScriptedUpstream):
    """Streams two pieces, then the connection drops; counts its streams."""

    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        self.streams += 1

        async def pieces() -> AsyncGenerator[StreamEvent, None]:
            yield Delta("half ")
            await trio.sleep(1)
            yield Delta("an answer")
            raise UpstreamUnavailable("the upstream's stream broke: RemoteProtocolError")

        async with aclosing(pieces()) as events:
            yield events


def record(status: str, **fields: Any) -> JobRecord:
    return JobRecord("0b3c1a2e-8f1d-4c4e-9a51-3d2f00000000", status, "m",
                     "2026-12-01T00:00:00.000Z", **fields)


def test_a_late_listener_gets_the_status_and_the_text_so_far_joined() -> None:
    events = JobEvents(buffer_size=8)
    events.status(record("processing"))
    for piece in ("one ", "two ", "three"):
        events.delta(piece)
    listener = events.listen()
    received = listener._receive  # noqa: SLF001 - read what is buffered without awaiting
    assert received.receive_nowait() == StatusChanged(record("processing").trace_id,
                                                      "processing", record("x").timestamp)
    assert received.receive_nowait() == TextDelta("one two three")
    events.end(record("completed", response="one two three"))
    assert isinstance(received.receive_nowait(), JobEnded)


async def test_a_listener_that_falls_behind_is_dropped_and_the_job_goes_on(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with service_with(ScriptedUpstream(), events_buffer=4) as service:
        accepted, _ = await service.submit_job(" ".join(["word"] * 50), "m", 0.7)
        slow = await service.job_events(accepted.trace_id)
        done = await service.job(accepted.trace_id, wait_s=60)
        assert done.status == "completed"
        events = await everything(slow)
    assert len(events) <= 5
    assert isinstance(events[-1], ListenerDropped)
    assert not any(isinstance(event, JobEnded) for event in events)


async def test_a_failure_before_the_first_delta_is_retried(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = ScriptedUpstream(UpstreamUnavailable("503 from the upstream"))
    async with service_with(upstream) as service:
        accepted, _ = await service.submit_job("again", "m", 0.7)
        listener = await service.job_events(accepted.trace_id)
        events = await everything(listener)
    assert len(upstream.requests) == 2
    final = events[-1]
    assert isinstance(final, JobEnded)
    assert final.record.status == "completed"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == final.record.response


async def test_a_failure_after_the_first_delta_voids_the_text_and_asks_again_up_to_max_attempts(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = BreaksMidStream()
    async with service_with(upstream) as service:
        accepted, _ = await service.submit_job("break", "m", 0.7)
        listener = await service.job_events(accepted.trace_id)
        events = await everything(listener)
        assert service.stats().upstream.in_flight == 0
        assert service.stats().upstream.retries == 0  # new answers, not the caller's retries
    assert upstream.streams == 3  # upstream.max_attempts answers in all
    kinds = [type(event).__name__ for event in events if not isinstance(event, StatusChanged)]
    assert kinds == ["TextDelta", "TextDelta", "TextReset"] * 2 + ["TextDelta", "TextDelta",
                                                                  "JobEnded"]
    final = events[-1]
    assert isinstance(final, JobEnded)
    assert final.record.status == "failed"
    assert final.record.error == {"type": "upstream_unavailable",
                                  "message": "the upstream's stream broke: RemoteProtocolError"}
    assert final.record.response is None


async def test_a_job_with_no_live_actor_here_is_followed_in_the_store(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    async with service_with(ScriptedUpstream(), store=store) as service:
        await store.save_job(record("processing"), 600)
        listener = await service.job_events(record("x").trace_id)
        assert await listener.__anext__() == StatusChanged(record("x").trace_id, "processing",
                                                           record("x").timestamp)
        await trio.sleep(5)
        await store.save_job(record("completed", response="elsewhere"), 600)
        events = await everything(listener)
    assert len(events) == 1
    assert isinstance(events[0], JobEnded)
    assert events[0].record.response == "elsewhere"


async def test_a_job_listener_that_closes_is_forgotten_by_the_job(
    autojump_clock: trio.abc.Clock,
) -> None:
    events = JobEvents(buffer_size=8)
    events.status(record("processing"))
    listener = events.listen()
    assert events.listeners == 1
    listener.close()
    assert events.listeners == 0
    events.delta("nobody hears this")
    assert events.dropped == 0
