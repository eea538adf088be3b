"""Helpers for the simulator's tests: the SDK client, the stats, and calls straight into the
ASGI app (no server, no socket) for anything timed on the ``autojump_clock``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import trio

from web.simulator import Simulator

KEY = "sk-test-key-0123456789abcdef"
MODEL = "gpt-3.5-turbo"
HELLO = [{"role": "user", "content": "hello"}]
COMPLETIONS = "/v1/chat/completions"


def sdk(base_url: str, api_key: str = KEY, timeout: float = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)


def side_url(base_url: str, path: str) -> str:
    """The URL of a simulator's own route (``/_simulator/...``) next to its ``/v1``."""
    return base_url.removesuffix("/v1") + path


async def get_stats(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(side_url(base_url, "/_simulator/stats"))
    assert response.status_code == 200
    return response.json()


async def settled_stats(base_url: str) -> dict[str, Any]:
    """The stats once no request is in flight: a server counts a stream's end just after its
    last byte, so a client that has read it may ask a moment too early."""
    for _ in range(250):  # the server settles within a few ms
        stats = await get_stats(base_url)
        if not stats["in_flight"]:
            break
        await trio.sleep(0.02)
    return stats


async def get_received(base_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(side_url(base_url, "/_simulator/received"))
    assert response.status_code == 200
    return response.json()["requests"]


@dataclass
class AppReply:
    """What the app sent: status, headers, and each body write with the Trio time it was sent."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    writes: list[tuple[float, bytes]] = field(default_factory=list)
    finished: bool = False  # the last write said more_body=False

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.writes)

    def events(self) -> list[str]:
        """The ``data:`` payloads of an event-stream body, in order."""
        blocks = self.body.decode().split("\n\n")
        assert blocks[-1] == "", "the body ends in the middle of an event"
        assert all(block.startswith("data: ") for block in blocks[:-1])
        return [block.removeprefix("data: ") for block in blocks[:-1]]


async def exchange_with_app(
    app: Simulator,
    method: str,
    path: str,
    body: object = None,
    key: str | None = KEY,
    *,
    client_leaves: trio.Event | None = None,
) -> AppReply:
    """One request straight into the ASGI app; the client disconnects when ``client_leaves``
    is set (never, if None)."""
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    pending = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    reply = AppReply()

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        if client_leaves is None:
            await trio.sleep_forever()
        else:
            await client_leaves.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = {name.decode(): value.decode() for name, value in message["headers"]}
        else:
            reply.writes.append((trio.current_time(), message.get("body", b"")))
            reply.finished = not message.get("more_body", False)

    await app(scope, receive, send)
    return reply


async def call_app(
    app: Simulator, method: str, path: str, body: object = None, key: str | None = KEY
) -> tuple[int, dict[str, str], bytes]:
    """One request straight into the ASGI app: status, headers and the whole body."""
    reply = await exchange_with_app(app, method, path, body, key)
    return reply.status, reply.headers, reply.body
