"""Graceful shutdown: a real `actorchat serve` process on SIGTERM, and the service's lifetime.

Over real sockets and processes, so these tests run on the real clock; they bound the time
only generously (a stuck shutdown fails), never tightly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from actors.lifetime import open_chat_service
from actors.store import JobRecord, MemoryStore
from web.api.app import create_app
from web.api.server import serve_app
from web.api.upstreams import open_upstream

from .conftest import SIM_KEY, StartSimulator, make_settings

# A shutdown that takes longer than this is stuck.
STUCK_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def start_serve(simulator_url: str, drain_s: float) -> tuple[trio.Process, str]:
    port = free_port()
    env = {
        **os.environ,
        "OPENAI_API_KEY": SIM_KEY,
        "OPENAI_BASE_URL": simulator_url,
        "SESSION_SECRET": "shutdown-test",
        "ACTORCHAT_SERVER__BIND": f"127.0.0.1:{port}",
        "ACTORCHAT_SERVER__DRAIN_S": str(drain_s),
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "web.cli", "serve"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return process, url
            except httpx.TransportError:
                await trio.sleep(0.05)
    process.kill()
    raise AssertionError("the server did not start")


async def read_all(stream: trio.abc.ReceiveStream) -> str:
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
    return b"".join(chunks).decode()


async def test_sigterm_during_load_lets_turns_and_jobs_in_flight_finish(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(latency_ms=800)
    process, url = await start_serve(simulator, drain_s=5)
    statuses: list[int] = []
    log = ""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=STUCK_S) as client, \
                trio.open_nursery() as nursery:

            async def turn(n: int) -> None:
                statuses.append(
                    (await client.post("/api/chat", json={"prompt": f"p{n}"})).status_code
                )

            async def job(n: int) -> None:
                accepted = await client.post("/chat", json={"message": f"m{n}"})
                statuses.append(accepted.status_code)

            for n in range(20):
                nursery.start_soon(turn, n)
            for n in range(10):
                nursery.start_soon(job, n)
            await wait_until_processing(client, turns=20, jobs=10)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(STUCK_S):
                log = await read_all(process.stderr)
                assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
    assert sorted(statuses) == [200] * 20 + [202] * 10
    assert "received SIGTERM" in log
    assert log.count("completed after") == 10
    assert "server shut down" not in log
    assert "drain time over" not in log
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/healthz")


async def wait_until_processing(client: httpx.AsyncClient, turns: int, jobs: int) -> None:
    """Poll /debug/actors until the server holds this many busy sessions and jobs."""
    with trio.fail_after(STUCK_S):
        while True:
            params = {"state": "busy", "limit": 0}
            body = (await client.get("/debug/actors", params=params)).json()
            live = body["totals"]["actors"]["live"]
            if body["matched"] >= turns + jobs and live.get("job", 0) >= jobs:
                return
            await trio.sleep(0.05)


async def test_a_job_may_run_past_quarts_five_second_shutdown_deadline_within_drain_s(
    start_simulator: StartSimulator,
) -> None:
    # Quart gives app.nursery 5 s at shutdown by default (BACKGROUND_TASK_SHUTDOWN_TIMEOUT);
    # the service lives there, and must get server.drain_s instead.
    simulator = await start_simulator(latency_ms=5500)
    process, url = await start_serve(simulator, drain_s=20)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=STUCK_S) as client:
            for n in range(3):
                assert (await client.post("/chat", json={"message": f"m{n}"})).status_code == 202
            await wait_until_processing(client, turns=0, jobs=3)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(STUCK_S):
            log = await read_all(process.stderr)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
    assert log.count("completed after") == 3
    assert "server shut down" not in log


async def test_work_still_running_at_drain_s_ends_with_clean_errors_and_the_process_exits(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(latency_ms=30_000)
    process, url = await start_serve(simulator, drain_s=1)
    turns: list[httpx.Response] = []
    try:
        async with httpx.AsyncClient(base_url=url, timeout=STUCK_S) as client, \
                trio.open_nursery() as nursery:
            for n in range(3):
                assert (await client.post("/chat", json={"message": f"m{n}"})).status_code == 202

            async def turn(n: int) -> None:
                turns.append(await client.post("/api/chat", json={"prompt": f"p{n}"}))

            for n in range(5):
                nursery.start_soon(turn, n)
            await wait_until_processing(client, turns=5, jobs=3)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(STUCK_S):
                log = await read_all(process.stderr)
                assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
    assert [turn.status_code for turn in turns] == [503] * 5
    for turn in turns:
        assert turn.json()["error"]["type"] == "shutting_down"
        assert turn.headers["retry-after"]
    assert "drain time over" in log
    assert log.count("failed: server shut down") == 3


class ClosingRecordStore(MemoryStore):
    """Remembers when it was closed; a job write after that is a violation.

    Writes take a moment, as over a network, so a close that does not wait for them shows.
    """

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.written_after_close: list[str] = []

    async def save_job(self, record: JobRecord, ttl_s: float | None) -> None:
        await trio.sleep(0.05)
        if self.closed:
            self.written_after_close.append(record.status)
        await super().save_job(record, ttl_s)

    async def aclose(self) -> None:
        self.closed = True


async def test_the_store_is_closed_only_after_every_actor_has_written_its_last_record(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(latency_ms=30_000)
    settings = make_settings(simulator, server={"drain_s": 0.2})
    store = ClosingRecordStore()
    app = create_app(settings, store=store)
    stop = trio.Event()
    with trio.fail_after(STUCK_S):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(
                partial(serve_app, settings, "127.0.0.1:0", app=app, shutdown_trigger=stop.wait)
            )
            async with httpx.AsyncClient(base_url=url) as client:
                trace_id = (await client.post("/chat", json={"message": "hi"})).json()["traceId"]
                await wait_until_processing(client, turns=0, jobs=1)
            stop.set()
    assert store.closed
    assert store.written_after_close == []
    record = await store.load_job(trace_id)
    assert (record.status, record.error["type"]) == ("failed", "shutting_down")


async def test_the_in_process_simulator_lives_exactly_as_long_as_the_service() -> None:
    settings = make_settings(None, upstream={"provider": "simulator"})
    opened: list[str] = []

    @asynccontextmanager
    async def watched_upstream(settings: Any) -> AsyncIterator[Any]:
        async with open_upstream(settings) as choice:
            opened.append(choice.client.base_url)
            yield choice

    with trio.fail_after(STUCK_S):
        async with open_chat_service(settings, open_upstream=watched_upstream) as service:
            assert service.stats().upstream.label == "simulator"
            reply = await service.chat(await service.new_session(), "hi", "gpt-test", 0.7)
            assert reply.model == "gpt-test-simulated"
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{opened[0]}/models")).status_code in (200, 401)
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{opened[0]}/models")
