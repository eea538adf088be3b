"""The context window: what is sent upstream (`fit_context`), what is stored
(`turns_to_drop`, the stores' cap), and both over real HTTP with the simulator."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors.context import fit_context, turns_to_drop
from actors.store import MemoryStore, Store

from .conftest import StartServer, make_settings
from .redis_servers import shared_redis_store
from .simulator_support import get_received

SYSTEM = {"role": "system", "content": "S" * 10}


def conversation(*sizes: int) -> list[dict[str, str]]:
    """Turns of a user message and an answer, each of ``size`` characters, oldest first."""
    messages = []
    for number, size in enumerate(sizes):
        messages.append({"role": "user", "content": f"{number}" * size})
        messages.append({"role": "assistant", "content": f"{number}" * size})
    return messages


def newest(size: int = 5) -> dict[str, str]:
    return {"role": "user", "content": "n" * size}


# fit_context


def test_everything_is_sent_when_it_fits_and_the_system_prompt_comes_first() -> None:
    history = [SYSTEM, *conversation(10, 10)]
    window = fit_context(history, newest(), 10_000, pinned=1)
    assert window == [*history, newest()]


def test_the_oldest_turns_go_first_and_only_whole_turns_are_sent() -> None:
    history = [SYSTEM, *conversation(10, 20, 30)]  # turns of 20, 40 and 60 characters
    # system 10 + newest 5 + last turn 60 = 75; the turn before (40) would need 115.
    for limit in (75, 100, 114):
        window = fit_context(history, newest(), limit, pinned=1)
        assert window == [SYSTEM, *history[5:], newest()], limit
    window = fit_context(history, newest(), 115, pinned=1)
    assert window == [SYSTEM, *history[3:], newest()]


def test_the_newest_message_alone_over_the_limit_is_still_sent_with_the_system_prompt() -> None:
    history = [SYSTEM, *conversation(10)]
    window = fit_context(history, newest(500), 100, pinned=1)
    assert window == [SYSTEM, newest(500)]


def test_an_older_turn_that_would_fit_is_not_sent_past_one_that_does_not() -> None:
    history = conversation(1, 100, 1)  # the middle turn is too big; the oldest is small
    window = fit_context(history, newest(1), 10)
    assert window == [*history[4:], newest(1)]


def test_without_a_system_prompt_nothing_is_pinned() -> None:
    history = conversation(3)
    assert fit_context(history, newest(1), 1) == [newest(1)]
    assert fit_context(history, newest(1), 7) == [*history, newest(1)]


def test_the_total_chars_shortcut_gives_the_same_window_as_reading_every_message() -> None:
    chooser = random.Random(9)
    for _ in range(300):
        sizes = [chooser.randint(0, 50) for _ in range(chooser.randint(0, 12))]
        history = [SYSTEM, *conversation(*sizes)]
        total = sum(len(message["content"]) for message in history)
        limit = chooser.randint(1, total + 40)
        message = newest(chooser.randint(1, 30))
        slow = fit_context(history, message, limit, pinned=1)
        assert fit_context(history, message, limit, pinned=1, total_chars=total) == slow
        # What it sends is within the limit unless only the pinned and newest are sent.
        sent = sum(len(part["content"]) for part in slow)
        assert sent <= limit or len(slow) == 2
        assert slow[0] is SYSTEM
        assert slow[-1] is message
        assert (len(slow) - 2) % 2 == 0  # whole turns


# turns_to_drop


@pytest.mark.parametrize(
    ("length", "limit", "dropped"),
    [(4, 4, 0), (6, 4, 2), (5, 4, 2), (8, 3, 6), (1002, 1000, 2), (10, 0, 0), (0, 4, 0)],
)
def test_only_whole_turns_are_dropped_from_the_front(length: int, limit: int, dropped: int,
                                                     ) -> None:
    assert turns_to_drop(length, limit) == dropped


# The stores' cap


@pytest.fixture(params=["memory", "redis"])
async def capped_store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(max_history_messages=4)
        return
    async with shared_redis_store(max_history_messages=4) as redis_store:
        yield redis_store


async def test_a_store_keeps_only_the_newest_whole_turns_past_its_cap(capped_store: Store,
                                                                      ) -> None:
    versions = [await capped_store.append_turn("s", f"q{turn}", f"a{turn}") for turn in range(5)]
    assert versions == sorted(versions)
    assert len(set(versions)) == 5
    assert await capped_store.load_history("s") == [
        ("user", "q3"), ("assistant", "a3"), ("user", "q4"), ("assistant", "a4"),
    ]


# Over real HTTP


async def _turn(client: Any, prompt: str) -> dict[str, Any]:
    reply = await client.post("/api/chat", json={"prompt": prompt})
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_what_reaches_the_upstream_is_the_system_prompt_then_the_newest_whole_turns(
    start_server: StartServer, simulator_url: str,
) -> None:
    system = "You are terse."
    # Each turn here is a 40-character prompt plus an answer of about 80 characters, so 300
    # characters hold the system prompt, the new prompt and the last two turns, not three.
    server = await start_server(make_settings(
        simulator_url, chat={"max_context_chars": 300, "system_prompt": system}))
    prompts = [f"{turn}" * 40 for turn in range(5)]
    async with server.client() as client:
        for prompt in prompts:
            await _turn(client, prompt)
        session_id = client.cookies["sessionId"].split(".")[0]
        detail = (await client.get(f"/debug/actors/{session_id}")).json()
        history = (await client.get("/api/chat/history")).json()["messages"]
    last = (await get_received(simulator_url))[-1]["messages"]
    assert last[0] == {"role": "system", "content": system}
    assert last[-1] == {"role": "user", "content": prompts[-1]}
    # Whole turns, the newest ones: the stored history's tail, user first.
    sent_turns = last[1:-1]
    assert sent_turns
    assert len(sent_turns) % 2 == 0
    assert sent_turns == history[len(history) - 2 - len(sent_turns):-2]
    assert sent_turns[0]["role"] == "user"
    assert sum(len(message["content"]) for message in last) <= 300
    older = history[len(history) - 4 - len(sent_turns):len(history) - 2 - len(sent_turns)]
    assert sum(len(message["content"]) for message in [*last, *older]) > 300
    assert len(history) == 10  # the store keeps everything: only what is sent is cut
    assert detail["last_context_messages"] == len(last)


async def test_a_new_message_alone_over_the_context_limit_is_still_sent(
    start_server: StartServer, simulator_url: str,
) -> None:
    server = await start_server(make_settings(simulator_url, chat={"max_context_chars": 50}))
    async with server.client() as client:
        await _turn(client, "short")
        await _turn(client, "x" * 200)
    last = (await get_received(simulator_url))[-1]["messages"]
    assert [message["role"] for message in last] == ["system", "user"]
    assert last[1]["content"] == "x" * 200


async def test_the_stored_history_is_capped_to_the_newest_whole_turns(
    start_server: StartServer, simulator_url: str,
) -> None:
    server = await start_server(make_settings(
        simulator_url, sessions={"max_history_messages": 4}))
    async with server.client() as client:
        for turn in range(4):
            await _turn(client, f"prompt {turn}")
        session_id = client.cookies["sessionId"].split(".")[0]
        live = (await client.get("/api/chat/history")).json()["messages"]
        stored = await server.service._store.load_history(session_id)
        await _turn(client, "prompt 4")
    assert [message["content"] for message in live if message["role"] == "user"] == [
        "prompt 2", "prompt 3"]
    assert [message["role"] for message in live] == ["user", "assistant"] * 2
    assert [text for role, text in stored if role == "user"] == ["prompt 2", "prompt 3"]
    # The capped history is also what the next turn sends.
    sent = (await get_received(simulator_url))[-1]["messages"]
    assert [message["content"] for message in sent if message["role"] == "user"] == [
        "prompt 2", "prompt 3", "prompt 4"]
