"""Shared fixtures.

Test policy:
- Anything about the wire runs over real HTTP: the app under Hypercorn on a free loopback
  port, the OpenAI simulator on another, the official ``openai`` SDK between them, and
  ``httpx`` as the client, the way ``curl`` would talk to the server.
- Anything about time (backoff, idle timeouts, expiry, deadlines) runs on Trio's
  ``MockClock(autojump_threshold=0)`` (the ``autojump_clock`` fixture) with no sockets, so
  nothing really sleeps; ``trio.testing.wait_all_tasks_blocked()`` lets the system settle.
- Every server a fixture starts is stopped in its teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from actors.config import Settings, SimulatorConfig, build_settings
from actors.store import Store
from web.simulator import serve_simulator

SIM_KEY = "sim-test-key"

StartSimulator = Callable[..., Awaitable[str]]


def make_settings(simulator_url: str | None, **sections: dict[str, Any]) -> Settings:
    """Settings for a test server: talks to ``simulator_url`` with the test key."""
    data: dict[str, dict[str, Any]] = {
        "server": {"bind": "127.0.0.1:0", "drain_s": 2.0, "access_log": False},
        "sessions": {"secret": "test-secret"},
    }
    if simulator_url is not None:
        data["upstream"] = {"provider": "openai", "base_url": simulator_url, "api_key": SIM_KEY}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return build_settings(data, environ={})


class RunningServer:
    """A running actorchat server: its base URL and its app state."""

    def __init__(self, url: str, app: Any) -> None:
        self.url = url
        self.app = app

    @property
    def service(self) -> Any:
        return self.app.extensions["actorchat"].service

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)


StartServer = Callable[..., Awaitable[RunningServer]]


@asynccontextmanager
async def simulators(**defaults: Any) -> AsyncIterator[StartSimulator]:
    """A starter of OpenAI simulators on free ports, each with ``defaults`` under the settings
    it is given; all stop when the block ends."""
    async with trio.open_nursery() as nursery:

        async def start(**settings: Any) -> str:
            config = SimulatorConfig(**{**defaults, **settings})
            return await nursery.start(serve_simulator, config)

        try:
            yield start
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Start OpenAI simulators that take the test key; all stop at teardown."""
    async with simulators(api_key=SIM_KEY) as start:
        yield start


@pytest.fixture
async def simulator_url(start_simulator: StartSimulator) -> str:
    return await start_simulator()


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start actorchat servers under Hypercorn on free ports; all stop at teardown."""
    from web.api.app import create_app
    from web.api.server import serve_app

    async with trio.open_nursery() as nursery:
        stops: list[trio.Event] = []

        async def start(settings: Settings, store: Store | None = None) -> RunningServer:
            app = create_app(settings, store=store)
            stop = trio.Event()
            stops.append(stop)
            binds = await nursery.start(
                partial(serve_app, settings, "127.0.0.1:0", app=app, shutdown_trigger=stop.wait)
            )
            return RunningServer(binds[0], app)

        try:
            yield start
        finally:
            for stop in stops:
                stop.set()  # a graceful stop; cancelled if it takes longer than 10 s
            nursery.cancel_scope.deadline = trio.current_time() + 10


@pytest.fixture
async def server(start_server: StartServer, simulator_url: str) -> RunningServer:
    """An actorchat server talking to a simulator with default settings."""
    return await start_server(make_settings(simulator_url))
