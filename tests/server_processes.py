"""actorchat servers as real processes (``python -m web.cli serve``), for the multi-instance
tests: configured through the environment only, stopped with SIGTERM (killed if they linger)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from .conftest import SIM_KEY
from .redis_servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def server_environment(redis_url: str, prefix: str, simulator_url: str) -> dict[str, str]:
    """Everything a server process needs, from the environment alone (no config file)."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("ACTORCHAT_", "OPENAI_"))}
    environment.update({
        "PYTHONPATH": str(ROOT),
        "ACTORCHAT_STORE__BACKEND": "redis",
        "ACTORCHAT_STORE__REDIS_URL": redis_url,
        "ACTORCHAT_STORE__PREFIX": prefix,
        "ACTORCHAT_STORE__TIMEOUT_S": "0.5",
        "ACTORCHAT_UPSTREAM__PROVIDER": "openai",
        "ACTORCHAT_SERVER__DRAIN_S": "2",
        "ACTORCHAT_SERVER__ACCESS_LOG": "false",
        "OPENAI_BASE_URL": simulator_url,
        "OPENAI_API_KEY": SIM_KEY,
        "SESSION_SECRET": "multi-instance-test-secret",
    })
    return environment


class ServerProcess:
    """One ``actorchat serve`` process (or a ``--workers`` parent) on a free port."""

    def __init__(self, environment: dict[str, str], *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._command = [sys.executable, "-m", "web.cli", "--log-level", "WARNING", "serve",
                         "--config", str(ROOT / "no-such-config.toml"),
                         "--bind", f"127.0.0.1:{self.port}", *extra]
        self._environment = environment
        self.process: trio.Process | None = None

    async def start(self) -> None:
        """Start it and wait (up to 30 s) until it answers /healthz."""
        self.process = await trio.lowlevel.open_process(
            self._command, env=self._environment, cwd=str(ROOT), stdout=subprocess.DEVNULL)
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            for _ in range(300):  # polling a child's startup, not timing logic
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}")
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)
        raise RuntimeError(f"server on port {self.port} did not start")

    async def stop(self) -> int | None:
        """SIGTERM, wait up to 15 s for the drain, then SIGKILL; returns the exit status."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            with trio.move_on_after(15):
                return await process.wait()
            process.kill()
            return await process.wait()

    def client(self, **options: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **options)  # type: ignore[arg-type]
