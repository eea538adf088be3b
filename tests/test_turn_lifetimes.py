"""Streamed turns and turns whose caller left, through the ChatService with no HTTP.

Time runs on the ``autojump_clock``; upstreams are the fakes, plus one here that fails in the
middle of its stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors.config import build_settings
from actors.errors import (
    CallerLeft,
    MailboxesFull,
    SessionBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from actors.lifetime import given_upstream, open_chat_service
from actors.store import MemoryStore
from actors.upstream import ChatRequest, Delta, StreamEvent

from .fakes import HangingUpstream, ScriptedUpstream


def settings(**sections: dict[str, Any]) -> Any:
    return build_settings({"chat": {"system_prompt": ""}, **sections}, environ={})


class BreaksMidStream(ScriptedUpstream):
    """Streams two pieces, then fails, ``breaks`` times; then streams like the others."""

    def __init__(self, breaks: int) -> None:
        super().__init__()
        self.breaks = breaks
        self.streams = 0

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        self.streams += 1
        if self.breaks:
            self.breaks -= 1
            async with aclosing(_broken()) as events:
                yield events
            return
        async with super().stream(request) as events:
            yield events


class FallsSilent(ScriptedUpstream):
    """Streams one piece every second for ``pieces`` pieces, then nothing, ever."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces
        self.streams = 0

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        self.streams += 1
        async with aclosing(_then_silence(self.pieces)) as events:
            yield events


async def _then_silence(pieces: int) -> AsyncGenerator[StreamEvent, None]:
    for _ in range(pieces):
        await trio.sleep(1)
        yield Delta("x")
    await trio.sleep_forever()
    yield Delta("never")


async def _broken() -> AsyncGenerator[StreamEvent, None]:
    yield Delta("half ")
    yield Delta("an answer")
    raise UpstreamUnavailable("the upstream connection dropped mid-stream")


async def read_all(stream: Any) -> list[str]:
    with stream:
        return [piece async for piece in stream.pieces]


async def test_a_streamed_turn_sends_its_pieces_then_records_the_whole_answer(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    async with open_chat_service(settings(), open_upstream=given_upstream(ScriptedUpstream()),
                                 store=store) as service:
        await store.create_session("s")
        stream = service.stream_chat("s", "hello there", "m", 0.7)
        pieces = await read_all(stream)
        reply = await stream.reply()
        assert pieces == ["re:", " hello", " there", " (1)"]
        assert "".join(pieces) == reply.response
        assert await store.load_history("s") == [("user", "hello there"),
                                                 ("assistant", reply.response)]


async def test_a_stream_that_breaks_after_a_piece_is_not_retried_and_records_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = BreaksMidStream(breaks=1)
    store = MemoryStore()
    async with open_chat_service(settings(), open_upstream=given_upstream(upstream),
                                 store=store) as service:
        await store.create_session("s")
        stream = service.stream_chat("s", "hi", "m", 0.7)
        assert await read_all(stream) == ["half ", "an answer"]
        with pytest.raises(UpstreamUnavailable):
            await stream.reply()
        assert upstream.streams == 1
        assert await store.load_history("s") == []


async def test_a_stream_that_fails_before_its_first_piece_is_retried(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = ScriptedUpstream(UpstreamUnavailable("upstream 503"))
    async with open_chat_service(settings(), open_upstream=given_upstream(upstream)) as service:
        session_id = await service.new_session()
        stream = service.stream_chat(session_id, "hi", "m", 0.7)
        assert "".join(await read_all(stream)) == "re: hi (1)"
        assert (await stream.reply()).attempts == 2


async def test_closing_a_stream_cancels_the_upstream_call_and_records_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = HangingUpstream()
    store = MemoryStore()
    async with open_chat_service(settings(), open_upstream=given_upstream(upstream),
                                 store=store) as service:
        await store.create_session("s")
        stream = service.stream_chat("s", "hi", "m", 0.7)
        await trio.testing.wait_all_tasks_blocked()
        assert service.stats().upstream.in_flight == 1
        stream.close()
        await trio.testing.wait_all_tasks_blocked()
        stats = service.stats(key="s", limit=1)
        assert stats.upstream.in_flight == 0
        assert stats.listed[0].state == "idle"
        assert stats.actors.abandoned == {"session": 1}
        with pytest.raises(CallerLeft):
            await stream.reply()
        assert await store.load_history("s") == []


async def test_a_caller_that_leaves_a_running_turn_cancels_it_and_records_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = HangingUpstream()
    store = MemoryStore()
    async with open_chat_service(settings(), open_upstream=given_upstream(upstream),
                                 store=store) as service:
        await store.create_session("s")
        with trio.move_on_after(5):
            await service.chat("s", "hi", "m", 0.7)
        await trio.testing.wait_all_tasks_blocked()
        assert service.stats().upstream.in_flight == 0
        assert service.stats().actors.abandoned == {"session": 1}
        assert await store.load_history("s") == []


async def test_a_caller_that_leaves_a_queued_turn_drops_it_before_it_goes_upstream(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = ScriptedUpstream()
    async with open_chat_service(settings(), open_upstream=given_upstream(upstream)) as service:
        session_id = await service.new_session()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.chat, session_id, "first", "m", 0.7)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as leaver:
                leaver.cancel()
                await service.chat(session_id, "left", "m", 0.7)
        assert [request.messages[-1]["content"] for request in upstream.requests] == ["first"]
        assert [text for _, text in await service.history(session_id)][::2] == ["first"]
        assert service.stats().actors.abandoned == {"session": 1}


async def test_a_caller_whose_gone_returns_cancels_its_running_turn_and_records_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The web layer's way of leaving: ``gone`` (its wait for the disconnect) returns."""
    upstream = HangingUpstream()
    store = MemoryStore()
    async with open_chat_service(settings(), open_upstream=given_upstream(upstream),
                                 store=store) as service:
        await store.create_session("s")

        async def leaves_after_5_s() -> None:
            await trio.sleep(5)

        with pytest.raises(CallerLeft):
            await service.chat("s", "hi", "m", 0.7, gone=leaves_after_5_s)
        assert trio.current_time() == pytest.approx(5)
        await trio.testing.wait_all_tasks_blocked()
        assert upstream.calls == 1
        assert service.stats().upstream.in_flight == 0
        assert service.stats().actors.abandoned == {"session": 1}
        assert await store.load_history("s") == []


async def test_the_answer_interrupts_the_callers_wait_on_gone(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = ScriptedUpstream()
    async with open_chat_service(settings(), open_upstream=given_upstream(upstream)) as service:
        session_id = await service.new_session()
        reply = await service.chat(session_id, "hi", "m", 0.7, gone=trio.sleep_forever)
        assert reply.response == "re: hi (1)"
        assert [text for _, text in await service.history(session_id)] == ["hi", "re: hi (1)"]
        assert service.stats().actors.abandoned == {}


async def test_turns_waiting_in_one_mailbox_are_bounded_in_bytes_with_a_busy_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    limits = {"actors": {"max_mailbox_bytes": 10_000, "max_queued_bytes": 1_000_000}}
    async with open_chat_service(settings(**limits),
                                 open_upstream=given_upstream(HangingUpstream())) as service:
        session_id = await service.new_session()
        async with trio.open_nursery() as nursery:
            for _ in range(3):  # one runs, two wait: about 8,100 bytes waiting
                nursery.start_soon(service.chat, session_id, "x" * 4000, "m", 0.7)
                await trio.testing.wait_all_tasks_blocked()
            assert 8000 < service.stats().actors.mailbox_bytes < 10_000
            with pytest.raises(SessionBusy):
                service.stream_chat(session_id, "x" * 4000, "m", 0.7)
            other = await service.new_session()
            service.stream_chat(other, "x" * 4000, "m", 0.7).close()  # another session is fine
            nursery.cancel_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert service.stats().actors.mailbox_bytes == 0


async def test_turns_waiting_in_all_mailboxes_are_bounded_in_bytes_with_an_overload_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    limits = {"actors": {"max_mailbox_bytes": 100_000, "max_queued_bytes": 13_000}}
    async with open_chat_service(settings(**limits),
                                 open_upstream=given_upstream(HangingUpstream())) as service:
        sessions = [await service.new_session() for _ in range(4)]
        async with trio.open_nursery() as nursery:
            for session_id in sessions[:3]:  # each: one turn running, one waiting
                for _ in range(2):
                    nursery.start_soon(service.chat, session_id, "x" * 4000, "m", 0.7)
                    await trio.testing.wait_all_tasks_blocked()
            assert 12_000 < service.stats().actors.mailbox_bytes < 13_000
            for session_id in (sessions[0], sessions[3]):  # even a new session's first turn
                with pytest.raises(MailboxesFull):
                    service.stream_chat(session_id, "x" * 4000, "m", 0.7)
            nursery.cancel_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        service.stream_chat(sessions[3], "x" * 4000, "m", 0.7).close()  # room again


async def test_a_stream_silent_for_the_upstream_timeout_fails_without_a_retry(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = FallsSilent(pieces=30)  # 30 s of pieces, each gap well under the timeout
    store = MemoryStore()  # and longer than the retry budget: a streaming answer outlasts it
    async with open_chat_service(settings(upstream={"timeout_s": 10, "max_retry_s": 20}),
                                 open_upstream=given_upstream(upstream), store=store) as service:
        await store.create_session("s")
        started = trio.current_time()
        stream = service.stream_chat("s", "hi", "m", 0.7)
        assert len(await read_all(stream)) == 30
        with pytest.raises(UpstreamTimeout):
            await stream.reply()
        silent_s = trio.current_time() - started - 30
        assert 9 <= silent_s <= 10
        assert upstream.streams == 1
        assert await store.load_history("s") == []
