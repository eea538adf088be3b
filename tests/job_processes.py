"""Real ``python -m web.cli serve`` processes over one Redis, for the job-stream and shared-gate
tests (the session tests have theirs in ``server_processes.py``).

Each process gets ``ACTORCHAT_STORE__BACKEND=redis`` and the test's own key prefix, talks to
the test's simulator, and is stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from tests.conftest import SIM_KEY
from tests.redis_servers import SHARED_REDIS_URL, free_port

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    """One actorchat server process on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = env
        self._log_path = log_path
        self.process: trio.Process | None = None

    async def start(self) -> None:
        """Start it and wait (20 s at most) until ``/healthz`` answers."""
        log = self._log_path.open("ab")
        self.process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "web.cli", "serve", "--bind", f"127.0.0.1:{self.port}"],
            env=self._env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        async with httpx.AsyncClient() as http:
            for _ in range(400):  # polling a child's startup, not timing logic
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited: {self.output()}")
                try:
                    if (await http.get(self.url + "/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.05)
        raise RuntimeError(f"server on port {self.port} did not start: {self.output()}")

    def output(self) -> str:
        return self._log_path.read_text(errors="replace")[-4000:]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)

    async def wait(self, timeout_s: float = 30.0) -> int | None:
        assert self.process is not None
        with trio.move_on_after(timeout_s):
            return await self.process.wait()
        return None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; runs even while the test is being cancelled."""
        if self.process is None or self.process.poll() is not None:
            return
        with trio.CancelScope(shield=True):
            self.signal(signal.SIGTERM)
            if await self.wait(15.0) is None:
                self.signal(signal.SIGKILL)
                await self.wait(5.0)


@asynccontextmanager
async def server_processes(count: int, simulator_url: str, prefix: str, tmp_path: Path,
                           **settings: str) -> AsyncIterator[list[ServerProcess]]:
    """``count`` servers over the shared Redis under ``prefix``; ``settings`` are extra
    ``ACTORCHAT_...`` variables. All are stopped on exit."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ACTORCHAT_", "OPENAI_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "ACTORCHAT_STORE__BACKEND": "redis",
        "ACTORCHAT_STORE__REDIS_URL": SHARED_REDIS_URL,
        "ACTORCHAT_STORE__PREFIX": prefix,
        "ACTORCHAT_UPSTREAM__PROVIDER": "openai",
        "ACTORCHAT_SERVER__ACCESS_LOG": "false",
        "OPENAI_BASE_URL": simulator_url,
        "OPENAI_API_KEY": SIM_KEY,
        "SESSION_SECRET": "test-secret",
        **settings,
    })
    servers = [ServerProcess(env, tmp_path / f"server-{index}.log") for index in range(count)]
    try:
        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(server.start)
        yield servers
    finally:
        for server in servers:
            await server.stop()
