"""Turns of one session are answered and recorded in the order they reached the server.

The first turn is held at the upstream, so the session's actor is busy; the next turns are
sent one by one, each only once the actor's mailbox shows it waiting. The order in which they
arrived is then known exactly, and the history must have that order, not just the same set.
"""

from __future__ import annotations

import trio

from actors.store import MemoryStore

from .conftest import RunningServer, StartServer, make_settings
from .held_simulator import open_held_simulator

TURNS = 12
SESSION_ID = "order-test-session-0123456789abcdef"


async def _wait_for_mailbox_depth(server: RunningServer, depth: int) -> None:
    with trio.fail_after(20):  # a guard against a hang, not a timing assertion
        while True:
            listed = server.service.stats(kind="session", key=SESSION_ID, limit=1).listed
            if listed and listed[0].mailbox_depth == depth:
                return
            await trio.sleep(0.005)


async def test_queued_turns_of_one_session_are_recorded_in_arrival_order(
    start_server: StartServer,
) -> None:
    store = MemoryStore()
    await store.create_session(SESSION_ID)
    async with open_held_simulator() as upstream:
        server = await start_server(make_settings(upstream.url), store=store)
        cookie = server.app.extensions["actorchat"].signer.sign(SESSION_ID)
        statuses: list[int] = []
        async with server.client(cookies={"sessionId": cookie}) as client:

            async def send(prompt: str) -> None:
                response = await client.post("/api/chat", json={"prompt": prompt})
                statuses.append(response.status_code)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, "turn 0")
                await upstream.wait_until(lambda held: held.held == 1)
                for n in range(1, TURNS):
                    nursery.start_soon(send, f"turn {n}")
                    await _wait_for_mailbox_depth(server, n)
                upstream.release()
            history = (await client.get("/api/chat/history")).json()["messages"]
    assert statuses == [200] * TURNS
    assert [message["content"] for message in history[::2]] == [f"turn {n}" for n in range(TURNS)]
    assert [message["role"] for message in history] == ["user", "assistant"] * TURNS
