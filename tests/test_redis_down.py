"""The server over Redis when Redis goes away and comes back: real HTTP, a redis-server of
this test's own (killed or paused mid-run, then started again on the same port)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import trio

from actors.config import Settings

from .conftest import StartServer, make_settings
from .redis_servers import own_redis_server


async def eventually_200(request: Callable[[], Awaitable[httpx.Response]]) -> bool:
    """True once ``request`` answers 200, trying for up to 10 s (a restart, not timing logic)."""
    for _ in range(200):
        if (await request()).status_code == 200:
            return True
        await trio.sleep(0.05)
    return False


def redis_settings(simulator_url: str, url: str) -> Settings:
    return make_settings(simulator_url, store={"backend": "redis", "redis_url": url,
                                               "timeout_s": 0.5})


async def test_the_server_uses_the_redis_store_the_settings_name(
    start_server: StartServer, simulator_url: str,
) -> None:
    async with own_redis_server() as redis:
        server = await start_server(redis_settings(simulator_url, redis.url))
        async with server.client() as client:
            assert (await client.post("/api/chat", json={"prompt": "hello"})).status_code == 200
            ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["store"] == "redis"
        stream = await trio.open_tcp_stream("127.0.0.1", redis.port)
        async with stream:
            await stream.send_all(b"KEYS *\r\n")
            listing = await stream.receive_some(4096)
        assert b"actorchat:session:{" in listing


async def test_while_redis_is_down_requests_get_503_json_and_service_resumes_when_it_is_back(
    start_server: StartServer, simulator_url: str,
) -> None:
    async with own_redis_server() as redis:
        server = await start_server(redis_settings(simulator_url, redis.url))
        async with server.client() as client:
            first = await client.post("/api/chat", json={"prompt": "one"})
            assert first.status_code == 200
            await redis.kill()
            for _ in range(3):  # the same session again and again: no actor crashes in a loop
                down = await client.post("/api/chat", json={"prompt": "lost"})
                assert down.status_code == 503
                assert down.json()["error"]["type"] == "store_unavailable"
                assert float(down.headers["retry-after"]) > 0
            async with server.client() as stranger:  # no cookie: a new session
                fresh = await stranger.post("/api/chat", json={"prompt": "new"})
            assert fresh.status_code == 503
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["store_reachable"] is False
            assert ready.json()["reasons"] == ["the redis store does not answer"]
            await redis.start()  # same port, empty: the session is gone with the data
            assert await eventually_200(lambda: client.get("/readyz"))
            again = await client.post("/api/chat", json={"prompt": "back"})
            assert again.status_code == 200


async def test_a_paused_redis_answers_503_within_the_store_timeout_not_a_hang(
    start_server: StartServer, simulator_url: str,
) -> None:
    async with own_redis_server() as redis:
        server = await start_server(redis_settings(simulator_url, redis.url))
        async with server.client() as client:
            assert (await client.post("/api/chat", json={"prompt": "one"})).status_code == 200
            redis.pause()
            try:
                with trio.fail_after(5):  # store.timeout_s is 0.5: connect, then reply
                    stuck = await client.post("/api/chat", json={"prompt": "two"})
                    ready = await client.get("/readyz")
            finally:
                redis.resume()
            assert stuck.status_code == 503
            assert ready.status_code == 503
            assert await eventually_200(lambda: client.post("/api/chat", json={"prompt": "3"}))
