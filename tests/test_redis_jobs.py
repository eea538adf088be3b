"""Trace jobs over the Redis Stream, with real server processes sharing one Redis.

Each test runs ``python -m web.cli serve`` twice under its own key prefix, deleted at the
end. Slow jobs come from the simulator's latency; the only waits on the real clock are
generous guards (``?wait``, ``fail_after``), never assertions on how long something took.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from tests.conftest import StartSimulator
from tests.job_processes import ServerProcess, server_processes
from tests.redis_servers import delete_prefix, fresh_prefix, shared_redis_store


async def submit(http: httpx.AsyncClient, server: ServerProcess, message: str) -> str:
    answer = await http.post(server.url + "/chat", json={"message": message})
    assert answer.status_code == 202, answer.text
    return answer.json()["traceId"]


async def result(http: httpx.AsyncClient, server: ServerProcess, trace_id: str,
                 wait_s: float = 30) -> dict:
    answer = await http.get(f"{server.url}/chat/{trace_id}/response",
                            params={"wait": wait_s}, timeout=wait_s + 10)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def debug(http: httpx.AsyncClient, server: ServerProcess) -> dict:
    answer = await http.get(server.url + "/debug/actors")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def status(http: httpx.AsyncClient, server: ServerProcess, trace_id: str) -> object:
    return (await result(http, server, trace_id, wait_s=0))["status"]


async def running(http: httpx.AsyncClient, server: ServerProcess) -> object:
    return (await debug(http, server))["totals"]["jobs"]["running"]


async def until(read: Callable[[], Awaitable[object]], expected: object) -> None:
    """Read until it gives ``expected``: 20 s at most (a guard, not a timing assertion)."""
    for _ in range(400):  # another process's state: nothing to wait on but its answers
        if await read() == expected:
            return
        await trio.sleep(0.05)
    raise AssertionError(f"still not {expected!r}: {await read()!r}")


async def cleanup(prefix: str) -> None:
    async with shared_redis_store(prefix) as store:
        await delete_prefix(store, prefix)


async def test_jobs_submitted_to_one_instance_are_readable_from_both(
        start_simulator: StartSimulator, tmp_path: Path) -> None:
    simulator = await start_simulator(latency_ms=50)
    prefix = fresh_prefix()
    try:
        async with server_processes(2, simulator, prefix, tmp_path,
                                    ACTORCHAT_STORE__TIMEOUT_S="0.4") as (first, second), \
                httpx.AsyncClient(timeout=30) as http:
            trace_ids = [await submit(http, first, f"question {n}") for n in range(6)]
            for n, trace_id in enumerate(trace_ids):
                done = await result(http, second, trace_id)
                assert done["status"] == "completed", done
                assert f'"question {n}"' in done["response"]
                again = await result(http, first, trace_id, wait_s=0)
                assert again == done
            missing = await http.get(f"{second.url}/chat/{'0' * 32}/response")
            assert missing.status_code == 404
            await trio.sleep(1.0)  # idle consumers block on the stream longer than timeout_s
            views = [await debug(http, server) for server in (first, second)]
        assert {view["instance"] for view in views} == set(views[0]["stream"]["instances"])
        assert len(views[0]["stream"]["instances"]) == 2
        assert sum(view["stream"]["claims"] for view in views) == 6
        assert [view["stream"]["redis_errors"] for view in views] == [0, 0]
        assert views[0]["stream"]["pending"] == views[0]["stream"]["entries"] == 0
    finally:
        await cleanup(prefix)


async def test_a_job_cancelled_on_one_instance_stops_where_it_runs(
        start_simulator: StartSimulator, tmp_path: Path) -> None:
    simulator = await start_simulator(latency_ms=60_000)
    prefix = fresh_prefix()
    try:
        async with server_processes(2, simulator, prefix, tmp_path) as (first, second), \
                httpx.AsyncClient(timeout=30) as http:
            trace_id = await submit(http, first, "never mind")
            await until(lambda: status(http, second, trace_id), "processing")
            for server in (first, second):
                answer = await http.delete(f"{server.url}/chat/{trace_id}")
                assert answer.status_code in (200, 204, 202), answer.text
            done = await result(http, first, trace_id)
            assert done["status"] == "cancelled", done
    finally:
        await cleanup(prefix)


async def test_jobs_of_an_instance_killed_with_sigkill_are_finished_by_the_other(
        start_simulator: StartSimulator, tmp_path: Path) -> None:
    simulator = await start_simulator(latency_ms=1500)
    prefix = fresh_prefix()
    try:
        async with server_processes(1, simulator, prefix, tmp_path,
                                    ACTORCHAT_JOBS__CLAIM_IDLE_S="1") as (victim,), \
                httpx.AsyncClient(timeout=30) as http:
            trace_ids = [await submit(http, victim, f"slow {n}") for n in range(4)]
            await until(lambda: running(http, victim), 4)
            victim.signal(signal.SIGKILL)
            await victim.wait()
            async with server_processes(1, simulator, prefix, tmp_path,
                                        ACTORCHAT_JOBS__CLAIM_IDLE_S="1") as (heir,):
                for n, trace_id in enumerate(trace_ids):
                    done = await result(http, heir, trace_id)
                    assert done["status"] == "completed", done
                    assert f'"slow {n}"' in done["response"]
                stream = (await debug(http, heir))["stream"]
                assert stream["reclaims"] == 4
                assert stream["pending"] == 0
                metrics = (await http.get(heir.url + "/metrics")).text
                assert "actorchat_jobs_reclaims_total 4.0" in metrics
                assert 'actorchat_redis_errors_total{part="jobs"}' in metrics
    finally:
        await cleanup(prefix)


async def test_jobs_in_flight_at_sigterm_are_left_to_the_other_instance(
        start_simulator: StartSimulator, tmp_path: Path) -> None:
    simulator = await start_simulator(latency_ms=4000)
    prefix = fresh_prefix()
    try:
        async with server_processes(1, simulator, prefix, tmp_path,
                                    ACTORCHAT_JOBS__CLAIM_IDLE_S="1",
                                    ACTORCHAT_SERVER__DRAIN_S="0.5") as (leaving,), \
                httpx.AsyncClient(timeout=30) as http:
            trace_ids = [await submit(http, leaving, f"long {n}") for n in range(3)]
            await until(lambda: running(http, leaving), 3)
            async with server_processes(1, simulator, prefix, tmp_path,
                                        ACTORCHAT_JOBS__CLAIM_IDLE_S="1") as (staying,):
                leaving.signal(signal.SIGTERM)
                assert await leaving.wait() == 0, leaving.output()
                for n, trace_id in enumerate(trace_ids):
                    done = await result(http, staying, trace_id)
                    assert done["status"] == "completed", done
                    assert f'"long {n}"' in done["response"]
    finally:
        await cleanup(prefix)
