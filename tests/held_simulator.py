"""The OpenAI simulator behind a gate the test opens, so states are seen by events, not by time.

A test that must see a job "processing" used to give the simulator some latency and hope to
look in time; on a busy machine the job finished first. Here every chat completion is held
at the gate until the test calls `HeldSimulator.release`, and the test waits for
`HeldSimulator.wait_until` instead of sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

from actors.config import SimulatorConfig
from web.simulator.app import Simulator

from .conftest import SIM_KEY

Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


class HeldSimulator:
    """An ASGI app: the simulator, with every chat completion held until `release`.

    A held request's body is read first and replayed to the simulator once the gate opens.
    ``held`` counts the requests that reached the gate; ``abandoned`` those whose client closed
    the connection while held (the app cancelled its upstream call). Other routes, such as
    ``/_simulator/stats``, pass straight through. Cancelling the server ends held requests.
    """

    def __init__(self, **settings: Any) -> None:
        settings.setdefault("api_key", SIM_KEY)
        self.simulator = Simulator(SimulatorConfig(**settings))
        self.url = ""
        self.held = 0
        self.abandoned = 0
        self._gate = trio.Event()
        self._changed = trio.Event()

    def release(self) -> None:
        """Open the gate for the held requests and every later one."""
        self._gate.set()

    async def wait_until(self, condition: Callable[[HeldSimulator], bool]) -> None:
        """Return once ``condition(self)`` holds; it is checked after every change."""
        while not condition(self):
            await self._changed.wait()

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.simulator(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.held += 1
        self._changed_now()
        if not await self._hold(receive):
            self.abandoned += 1
            self._changed_now()
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.simulator(scope, replay, send)

    async def _hold(self, receive: Receive) -> bool:
        """Wait for the gate; False if the client disconnected first."""
        client_left = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal client_left
                while (await receive())["type"] != "http.disconnect":
                    pass
                client_left = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await self._gate.wait()
            nursery.cancel_scope.cancel()
        return not client_left


@asynccontextmanager
async def open_held_simulator(**settings: Any) -> AsyncIterator[HeldSimulator]:
    """Serve a `HeldSimulator` on a free loopback port; its ``url`` ends in ``/v1``.

    The server is cancelled on exit, which ends any request still held.
    """
    held = HeldSimulator(**settings)
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, held, config, mode="asgi"))
        held.url = f"{binds[0]}/v1"
        try:
            yield held
        finally:
            nursery.cancel_scope.cancel()
