"""Redis for the tests: a fresh key prefix on the shared Redis, or a redis-server of our own.

The shared Redis is ``ACTORCHAT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``; ``.ci/run``
starts it). Each test gets its own random key prefix there and deletes its keys afterwards.
Tests that stop Redis, or need it empty, start their own ``redis-server`` on a free port.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from actors.store.redis import RedisStore, open_redis_store

SHARED_REDIS_URL = os.environ.get("ACTORCHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def fresh_prefix() -> str:
    return f"actorchat-test-{secrets.token_hex(6)}:"


async def delete_prefix(store: RedisStore, prefix: str) -> None:
    """Delete every key under ``prefix``; runs even if the test is being cancelled."""
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        keys = [key async for key in store.client.scan_iter(match=prefix + "*")]
        if keys:
            await store.client.delete(keys)


@asynccontextmanager
async def shared_redis_store(prefix: str | None = None, **options: Any,
                             ) -> AsyncIterator[RedisStore]:
    """A RedisStore on the shared Redis under a fresh prefix, deleted at exit."""
    prefix = prefix or fresh_prefix()
    async with open_redis_store(SHARED_REDIS_URL, prefix=prefix, **options) as store:
        if not await store.ping():
            pytest.fail(f"Redis at {SHARED_REDIS_URL} does not answer: start it "
                        "(.ci/run does, or: redis-server --daemonize yes --save '')")
        try:
            yield store
        finally:
            await delete_prefix(store, prefix)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A ``redis-server`` of this test's own, on a free port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: trio.Process | None = None

    async def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers PING."""
        self._process = await trio.lowlevel.open_process(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(500):  # polling a child's startup (10 s at most), not timing logic
            if await self.answers():
                return
            await trio.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    async def answers(self) -> bool:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except OSError:
            return False
        async with stream:
            await stream.send_all(b"PING\r\n")
            return (await stream.receive_some(64)).startswith(b"+PONG")

    async def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            await self._process.wait()
            self._process = None

    def pause(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)


@asynccontextmanager
async def own_redis_server() -> AsyncIterator[RedisServer]:
    """A running RedisServer, killed at exit."""
    server = RedisServer()
    try:
        await server.start()
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.kill()
