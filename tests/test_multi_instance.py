"""Several actorchat processes over one Redis: real server processes (``python -m web.cli
serve``), configured by the environment, talking to an in-test simulator; a fresh key prefix
on the shared Redis, deleted afterwards (or a redis-server of the test's own, to stop it).

The two processes share SESSION_SECRET, so one cookie names the same conversation on both.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from .redis_servers import SHARED_REDIS_URL, fresh_prefix, own_redis_server, shared_redis_store
from .server_processes import ServerProcess, server_environment


@asynccontextmanager
async def running(*servers: ServerProcess) -> AsyncIterator[tuple[ServerProcess, ...]]:
    try:
        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(server.start)
        yield servers
    finally:
        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(server.stop)


@asynccontextmanager
async def two_processes(simulator_url: str) -> AsyncIterator[
        tuple[ServerProcess, ServerProcess, httpx.AsyncClient]]:
    """Two servers over the shared Redis under a fresh prefix, and a client; all stopped and
    the prefix's keys deleted on exit."""
    prefix = fresh_prefix()
    environment = server_environment(SHARED_REDIS_URL, prefix, simulator_url)
    async with shared_redis_store(prefix), \
            running(ServerProcess(environment), ServerProcess(environment)) as (a, b), \
            httpx.AsyncClient(timeout=30) as client:
        yield a, b, client


async def chat(client: httpx.AsyncClient, url: str, prompt: str) -> httpx.Response:
    return await client.post(f"{url}/api/chat", json={"prompt": prompt})


async def history(client: httpx.AsyncClient, url: str) -> list[tuple[str, str]]:
    response = await client.get(f"{url}/api/chat/history")
    assert response.status_code == 200
    return [(message["role"], message["content"]) for message in response.json()["messages"]]


async def test_a_conversation_alternating_between_two_processes_keeps_one_history_and_a_restart(
    simulator_url: str,
) -> None:
    prefix = fresh_prefix()
    environment = server_environment(SHARED_REDIS_URL, prefix, simulator_url)
    async with shared_redis_store(prefix):
        async with running(ServerProcess(environment), ServerProcess(environment)) as (a, b), \
                httpx.AsyncClient(timeout=30) as client:
            for number in range(6):
                reply = await chat(client, (a, b)[number % 2].url, f"turn {number}")
                assert reply.status_code == 200
                assert f"messages received: {2 * number + 2}" in reply.json()["response"]
            kept = await history(client, a.url)
            assert kept == await history(client, b.url)
            assert [text for role, text in kept if role == "user"] == [
                f"turn {number}" for number in range(6)]
            cookies = dict(client.cookies)
        # Everything stopped; a new process finds the conversation where it was.
        async with running(ServerProcess(environment)) as (c,), \
                httpx.AsyncClient(timeout=30, cookies=cookies) as client:
            assert await history(client, c.url) == kept
            reply = await chat(client, c.url, "after the restart")
            assert "messages received: 14" in reply.json()["response"]


async def test_forty_concurrent_turns_of_one_session_over_two_processes_are_each_kept_once(
    simulator_url: str,
) -> None:
    async with two_processes(simulator_url) as (a, b, client):
        assert (await chat(client, a.url, "start")).status_code == 200
        statuses: dict[str, int] = {}

        async def turn(number: int) -> None:
            response = await chat(client, (a, b)[number % 2].url, f"c{number}")
            statuses[f"c{number}"] = response.status_code

        async with trio.open_nursery() as nursery:
            for number in range(40):
                nursery.start_soon(turn, number)
        kept = await history(client, b.url)
    answered = {prompt for prompt, status in statuses.items() if status == 200}
    assert set(statuses.values()) <= {200, 429}
    assert len(answered) >= 30
    assert [role for role, _ in kept] == ["user", "assistant"] * (len(kept) // 2)
    users = [text for role, text in kept[2:] if role == "user"]
    assert sorted(users) == sorted(answered)  # each answered turn once, no refused one
    for index in range(0, len(kept), 2):  # each answer follows its own prompt, with all before
        assert f'"{kept[index][1]}" (messages received: {index + 2})' in kept[index + 1][1]


async def test_redis_stopped_mid_run_gives_503_json_until_it_is_back(simulator_url: str) -> None:
    async with own_redis_server() as redis:
        environment = server_environment(redis.url, "t:", simulator_url)
        async with running(ServerProcess(environment)) as (server,), \
                httpx.AsyncClient(timeout=30) as client:
            assert (await chat(client, server.url, "one")).status_code == 200
            await redis.kill()
            down = await chat(client, server.url, "two")
            assert down.status_code == 503
            assert down.json()["error"]["type"] == "store_unavailable"
            assert "retry-after" in down.headers
            assert (await client.get(f"{server.url}/readyz")).status_code == 503
            await redis.start()
            for _ in range(100):  # a restart, polled (at most 5 s), not timing logic
                back = await chat(client, server.url, "three")
                if back.status_code == 200:
                    break
                await trio.sleep(0.05)
            assert back.status_code == 200


async def test_two_workers_serve_one_port_and_sigterm_stops_them_all(simulator_url: str) -> None:
    prefix = fresh_prefix()
    environment = server_environment(SHARED_REDIS_URL, prefix, simulator_url)
    parent = ServerProcess(environment, "--workers", "2")
    async with shared_redis_store(prefix), running(parent), \
            httpx.AsyncClient(timeout=30) as client:
        for number in range(8):
            # A new connection each time, so the kernel may hand it to either worker.
            client.headers["connection"] = "close"
            reply = await chat(client, parent.url, f"w{number}")
            assert f"messages received: {2 * number + 2}" in reply.json()["response"]
        # One socket made by the parent and accepted from by both workers, as Hypercorn's
        # own workers share theirs: not one SO_REUSEPORT socket per worker (web/workers.py).
        assert listening_sockets(int(parent.url.rpartition(":")[2])) == 1
        status = await parent.stop()
    assert status == 0
    with trio.fail_after(5):
        async with httpx.AsyncClient() as client:
            try:
                await client.get(f"{parent.url}/healthz")
                raise AssertionError("a worker still answers after SIGTERM")
            except httpx.ConnectError:
                pass


def listening_sockets(port: int) -> int:
    """How many sockets listen on this TCP port (``/proc/net/tcp``, state 0A: LISTEN)."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[1].endswith(f":{port:04X}") and row[3] == "0A")


async def test_workers_over_the_memory_store_are_refused_with_the_reason(
    simulator_url: str,
) -> None:
    environment = server_environment(SHARED_REDIS_URL, "unused:", simulator_url)
    environment["ACTORCHAT_STORE__BACKEND"] = "memory"
    refused = ServerProcess(environment, "--workers", "2")
    result = await trio.run_process(
        refused._command, env=environment, capture_stderr=True, check=False)
    assert result.returncode == 2
    assert b'needs store.backend = "redis"' in result.stderr


@pytest.mark.parametrize("extra", [(), ("--workers", "2")])
async def test_a_port_in_use_is_refused_with_the_address_and_status_2(
    simulator_url: str, extra: tuple[str, ...],
) -> None:
    environment = server_environment(SHARED_REDIS_URL, "unused:", simulator_url)
    server = ServerProcess(environment, *extra)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        result = await trio.run_process(
            server._command, env=environment, capture_stderr=True, check=False)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{server.port}: Address already in use".encode() \
        in result.stderr
    assert b"Traceback" not in result.stderr


async def test_a_conversation_deleted_on_one_process_starts_anew_on_the_other(
    simulator_url: str,
) -> None:
    """A's actor for the session stays live and A does not ask Redis whether the session
    exists; its next turn's lease finds it gone and A starts a new one, as for a cookie that
    names no session."""
    async with two_processes(simulator_url) as (a, b, client):
        assert (await chat(client, a.url, "first")).status_code == 200
        old_cookie = client.cookies["sessionId"]
        assert (await client.delete(f"{b.url}/api/chat")).status_code == 204
        client.cookies.clear()
        client.cookies.set("sessionId", old_cookie)  # the client kept the old cookie
        reply = await chat(client, a.url, "again")
        assert reply.status_code == 200
        assert "messages received: 2" in reply.json()["response"]  # a new conversation
        new_cookie = reply.cookies["sessionId"]
        assert new_cookie != old_cookie
        client.cookies.clear()
        client.cookies.set("sessionId", new_cookie)
        assert await history(client, a.url) == [
            ("user", "again"), ("assistant", reply.json()["response"])]
