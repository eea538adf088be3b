"""Graceful shutdown of a real `actorchat serve` process on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import trio

from .conftest import SIM_KEY, StartSimulator


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
        async with httpx.AsyncClient(base_url=url, timeout=10) as client, \
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
            await trio.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(8):
                log = await read_all(process.stderr)
                assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
    assert sorted(statuses) == [200] * 20 + [202] * 10
    assert "received SIGTERM" in log
    assert log.count("completed after") == 10
    assert "server shut down" not in log
    async with httpx.AsyncClient() as client:
        try:
            await client.get(f"{url}/healthz")
            raise AssertionError("the server still answers after shutting down")
        except httpx.ConnectError:
            pass


async def test_work_still_running_after_drain_s_is_cancelled_and_jobs_fail_clearly(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator(latency_ms=5000)
    process, url = await start_serve(simulator, drain_s=0.5)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for n in range(3):
                assert (await client.post("/chat", json={"message": f"m{n}"})).status_code == 202
        await trio.sleep(0.2)
        started = trio.current_time()
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(8):
            log = await read_all(process.stderr)
            assert await process.wait() == 0
        assert trio.current_time() - started < 3
    finally:
        if process.returncode is None:
            process.kill()
    assert log.count("failed: server shut down") == 3
