"""Session actors through the ChatService, with no HTTP: turns, history, forgetting, loading."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors.config import build_settings
from actors.errors import UpstreamUnavailable
from actors.lifetime import given_upstream, open_chat_service
from actors.store import MemoryStore

from .fakes import ScriptedUpstream


def settings(**sections: dict[str, Any]) -> Any:
    return build_settings({"chat": {"system_prompt": "be brief"}, **sections}, environ={})


async def test_a_failed_turn_leaves_the_history_as_it_was(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStore()
    upstream = ScriptedUpstream()
    opener = given_upstream(upstream, "fake")
    async with open_chat_service(settings(upstream={"max_attempts": 1}), open_upstream=opener,
                                 store=store) as service:
        await store.create_session("s")
        reply = await service.chat("s", "one", "m", 0.7)
        assert reply.response == "re: one (2)"
        upstream.errors.append(UpstreamUnavailable("upstream 503"))
        with pytest.raises(UpstreamUnavailable):
            await service.chat("s", "lost", "m", 0.7)
        assert await service.history("s") == [("user", "one"), ("assistant", "re: one (2)")]
        assert await store.load_history("s") == [("user", "one"), ("assistant", "re: one (2)")]
        reply = await service.chat("s", "two", "m", 0.7)
        assert reply.response == "re: two (4)"
        assert upstream.requests[-1].messages[0] == {"role": "system", "content": "be brief"}


async def test_a_restarted_session_actor_reloads_its_history_from_the_store(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    await store.create_session("s")
    await store.append_turn("s", "earlier", "answer")
    async with open_chat_service(
        build_settings({"chat": {"system_prompt": ""}, "actors": {"idle_timeout_s": 5},
                        "sessions": {"ttl_s": 0}}, environ={}),
        open_upstream=given_upstream(ScriptedUpstream()), store=store,
    ) as service:
        assert (await service.chat("s", "now", "m", 0.7)).response == "re: now (3)"
        await trio.sleep(10)
        assert service.stats().actors.live == {}
        assert (await service.chat("s", "later", "m", 0.7)).response == "re: later (5)"


class GatedStore(MemoryStore):
    """Loads a history only once ``release`` is set: a store that does I/O."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()

    async def load_history(self, session_id: str) -> Any:
        await self.release.wait()
        return await super().load_history(session_id)


async def test_a_caller_that_leaves_while_its_session_loads_does_not_fail_the_others(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = GatedStore()
    answers: list[str] = []
    async with open_chat_service(settings(), open_upstream=given_upstream(ScriptedUpstream()),
                                 store=store) as service:
        await store.create_session("s")

        async def second() -> None:
            answers.append((await service.chat("s", "second", "m", 0.7)).response)

        async with trio.open_nursery() as callers:
            with trio.CancelScope() as first:
                callers.start_soon(second)
                first.cancel()
                await service.chat("s", "first", "m", 0.7)  # starts the actor, then leaves
            await trio.testing.wait_all_tasks_blocked()
            store.release.set()
        # The first caller left before its turn began: the turn was dropped (issue 11,
        # finding 9), so the second turn is the conversation's first.
        assert answers == ["re: second (2)"]


async def test_history_and_forget_wait_for_the_turns_queued_before_them(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore()
    async with open_chat_service(settings(), open_upstream=given_upstream(ScriptedUpstream()),
                                 store=store) as service:
        await store.create_session("s")
        seen: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:

            async def turn() -> None:
                seen["turn"] = (await service.chat("s", "hello", "m", 0.7)).response

            async def history() -> None:
                seen["history"] = await service.history("s")

            async def forget() -> None:
                seen["forget"] = await service.forget("s")

            for step in (turn, history, forget):
                nursery.start_soon(step)
                await trio.testing.wait_all_tasks_blocked()
        assert seen == {
            "turn": "re: hello (2)",
            "history": [("user", "hello"), ("assistant", "re: hello (2)")],
            "forget": True,
        }
        assert not await store.session_exists("s")
        assert await service.history("s") == []
