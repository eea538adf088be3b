"""Streamed turns over real HTTP (issue 9), and turns whose caller left (issue 11, finding 9).

The app runs under Hypercorn on a free port, the simulator on another; each test runs once per
door to ``POST /api/chat`` (the fast path and the Quart view). Where a test waits for the
server to settle after a client left, it polls with a bound: the cancellation crosses two
servers and a socket.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from .conftest import RunningServer, StartServer, StartSimulator, make_settings
from .raw_client import open_stream
from .simulator_support import get_received, get_stats, settled_stats


@pytest.fixture(params=["fast path", "quart view"])
def chat_door(request: pytest.FixtureRequest) -> str:
    return request.param


async def start(start_server: StartServer, chat_door: str, simulator_url: str,
                **sections: dict[str, Any]) -> RunningServer:
    server = await start_server(make_settings(simulator_url, **sections))
    server.app.asgi_app.fast_chat = chat_door == "fast path"
    return server


def parse_events(body: str) -> list[tuple[str | None, str]]:
    """(event name, data) per server-sent event, in order."""
    events = []
    for block in body.split("\n\n"):
        if not block:
            continue
        name = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
        events.append((name, data))
    return events


async def stream_chat(client: httpx.AsyncClient, prompt: str, **extra: Any,
                      ) -> tuple[httpx.Response, list[tuple[str | None, str]], int]:
    """POST a streamed turn; the response, its events, and how many body chunks arrived."""
    chunks = []
    body = {"prompt": prompt, "stream": True, **extra}
    async with client.stream("POST", "/api/chat", json=body) as reply:
        async for chunk in reply.aiter_text():
            chunks.append(chunk)
    return reply, parse_events("".join(chunks)), len(chunks)


async def history(client: httpx.AsyncClient) -> list[dict[str, str]]:
    return (await client.get("/api/chat/history")).json()["messages"]


async def until(check: Any, what: str) -> None:
    """Poll ``check`` until it is true, for at most 5 s (``what`` names it on failure)."""
    for _ in range(250):
        if await check():
            return
        await trio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_streamed_answer_arrives_in_several_events_and_equals_the_unstreamed_text(
    start_server: StartServer, start_simulator: StartSimulator, chat_door: str,
) -> None:
    simulator = await start_simulator(stream_chunks=8, chunk_delay_ms=10)
    server = await start(start_server, chat_door, simulator)
    async with server.client() as streamed, server.client() as plain:
        reply, events, chunks = await stream_chat(streamed, "tell me")
        whole = (await plain.post("/api/chat", json={"prompt": "tell me"})).json()
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.headers["set-cookie"].startswith("sessionId=")
        deltas = [json.loads(data)["delta"] for name, data in events[:-2]]
        assert len(deltas) >= 2
        assert chunks >= 2
        final = json.loads(events[-2][1])
        assert events[-1] == (None, "[DONE]")
        assert "".join(deltas) == final["response"] == whole["response"]
        assert final["model"] == whole["model"]
        assert final["usage"]["total_tokens"] > 0
        assert await history(streamed) == [
            {"role": "user", "content": "tell me"},
            {"role": "assistant", "content": final["response"]},
        ]


async def test_accept_event_stream_streams_without_the_body_field(
    start_server: StartServer, simulator_url: str, chat_door: str,
) -> None:
    server = await start(start_server, chat_door, simulator_url)
    async with server.client() as client:
        reply = await client.post("/api/chat", json={"prompt": "hi"},
                                  headers={"Accept": "text/event-stream"})
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.text.endswith("data: [DONE]\n\n")


async def test_a_429_before_the_first_byte_is_a_json_429_with_retry_after(
    start_server: StartServer, start_simulator: StartSimulator, chat_door: str,
) -> None:
    simulator = await start_simulator(rate_429=1.0, retry_after_s=1.0)
    server = await start(start_server, chat_door, simulator,
                         upstream={"max_attempts": 1})
    async with server.client() as client:
        reply = await client.post("/api/chat", json={"prompt": "hi", "stream": True})
        assert reply.status_code == 429
        assert reply.headers["content-type"] == "application/json"
        assert reply.json()["error"]["type"] == "rate_limited"
        assert float(reply.headers["retry-after"]) >= 1
        assert await history(client) == []


async def test_a_failure_mid_stream_is_an_error_event_and_nothing_is_recorded(
    start_server: StartServer, start_simulator: StartSimulator, chat_door: str,
) -> None:
    simulator = await start_simulator(rate_stream_error=1.0, stream_chunks=6)
    server = await start(start_server, chat_door, simulator)
    async with server.client() as client:
        reply, events, _ = await stream_chat(client, "hi", stream=True)
        assert reply.status_code == 200
        assert events[0][0] is None
        assert "delta" in json.loads(events[0][1])
        name, data = events[-1]
        assert name == "error"
        assert set(json.loads(data)) == {"type", "message"}
        assert await history(client) == []
    stats = await settled_stats(simulator)
    assert stats["stream_error"] == 1  # once: a stream the client saw part of is not retried


async def test_a_client_that_leaves_mid_stream_leaves_no_history_and_no_running_task(
    start_server: StartServer, start_simulator: StartSimulator, chat_door: str,
) -> None:
    simulator = await start_simulator(stream_chunks=50, chunk_delay_ms=50)
    server = await start(start_server, chat_door, simulator)
    async with server.client() as client:
        first = await client.post("/api/chat", json={"prompt": "warm up"})
        session_id = first.headers["set-cookie"].split("=", 1)[1].split(".")[0]
        body = json.dumps({"prompt": "long one", "stream": True}).encode()
        cookie = f"sessionId={first.cookies['sessionId']}"
        async with await open_stream(server.url) as raw:  # leaves after the first piece
            await raw.send_all(
                b"POST /api/chat HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Cookie: %s\r\nContent-Length: %d\r\n\r\n%s" % (cookie.encode(), len(body), body)
            )
            received = b""
            while b"delta" not in received:
                received += await raw.receive_some()

        async def settled() -> bool:
            stats = await get_stats(simulator)
            actor = server.service.stats(key=session_id, limit=1).listed[0]
            return stats["client_left"] == 1 and stats["in_flight"] == 0 and \
                actor.state == "idle" and actor.activity == "idle"

        await until(settled, "the stream to be cancelled")
        totals = server.service.stats().actors
        assert totals.abandoned == {"session": 1}
        assert server.service.stats().upstream.in_flight == 0
        assert [m["content"] for m in await history(client)] == ["warm up", *_answer(first)]


def _answer(reply: httpx.Response) -> list[str]:
    return [reply.json()["response"]]


async def test_a_queued_turn_whose_client_left_is_never_sent_upstream_nor_recorded(
    start_server: StartServer, start_simulator: StartSimulator, chat_door: str,
) -> None:
    simulator = await start_simulator(latency_ms=400)
    server = await start(start_server, chat_door, simulator)
    async with server.client() as client:
        first = await client.post("/api/chat", json={"prompt": "first"})
        cookie = {"sessionId": first.cookies["sessionId"]}
        async with httpx.AsyncClient(base_url=server.url, cookies=cookie) as other, \
                httpx.AsyncClient(base_url=server.url, cookies=cookie) as leaver, \
                trio.open_nursery() as nursery:

            async def busy_turn() -> None:
                await other.post("/api/chat", json={"prompt": "second"})

            nursery.start_soon(busy_turn)
            await trio.sleep(0.1)  # "second" is running upstream; "left" queues behind it
            with trio.move_on_after(0.1):
                await leaver.post("/api/chat", json={"prompt": "left"})
        prompts = [request["messages"][-1]["content"] for request in
                   await get_received(simulator)]
        assert prompts == ["first", "second"]
        assert [m["content"] for m in await history(client)][::2] == ["first", "second"]
        assert server.service.stats().actors.abandoned == {"session": 1}
        metrics = (await client.get("/metrics")).text
        assert 'actorchat_actors_abandoned_total{kind="session"} 1.0' in metrics


async def test_a_running_turn_whose_client_left_is_cancelled_upstream_and_not_recorded(
    start_server: StartServer, start_simulator: StartSimulator, chat_door: str,
) -> None:
    simulator = await start_simulator(latency_ms=2000)
    server = await start(start_server, chat_door, simulator)
    async with server.client() as client:
        first = await client.post("/api/chat", json={"prompt": "first"})
        with trio.move_on_after(0.3):
            await client.post("/api/chat", json={"prompt": "left"})

        async def settled() -> bool:
            return server.service.stats().upstream.in_flight == 0 and \
                server.service.stats().actors.abandoned == {"session": 1}

        await until(settled, "the turn to be cancelled")
        assert [m["content"] for m in await history(client)] == \
            ["first", first.json()["response"]]


async def test_a_stream_dropped_mid_way_is_an_error_event_and_nothing_is_recorded(
    start_server: StartServer, start_simulator: StartSimulator, chat_door: str,
) -> None:
    simulator = await start_simulator(rate_drop=1.0, stream_chunks=6)
    server = await start(start_server, chat_door, simulator)
    async with server.client() as client:
        reply, events, _ = await stream_chat(client, "hi")
        assert reply.status_code == 200
        assert events[-1][0] == "error"
        assert json.loads(events[-1][1])["type"] == "upstream_unavailable"
        assert await history(client) == []


async def test_turns_past_the_bytes_all_mailboxes_may_hold_get_503_with_retry_after(
    start_server: StartServer, start_simulator: StartSimulator, chat_door: str,
) -> None:
    simulator = await start_simulator(latency_ms=500)
    server = await start(start_server, chat_door, simulator,
                         actors={"max_queued_bytes": 100_000})
    prompt = "x" * 30_000
    statuses: list[int] = []
    async with server.client() as client:
        await client.post("/api/chat", json={"prompt": "hi"})  # the client keeps the cookie
        async with trio.open_nursery() as nursery:

            async def turn() -> None:
                reply = await client.post("/api/chat", json={"prompt": prompt})
                statuses.append(reply.status_code)
                if reply.status_code == 503:
                    assert reply.json()["error"]["type"] == "overloaded"
                    assert reply.headers["retry-after"] == "1"

            for _ in range(6):
                nursery.start_soon(turn)
    assert statuses.count(503) >= 2  # at most 3 of 30,000 characters wait; one runs
    assert statuses.count(200) >= 3
