"""Raw HTTP/1.1 servers for the transport and upstream tests: they misbehave on purpose.

A test gives `start_raw_server` a handler that reads requests with `Requests` and writes
whatever bytes it wants; `Server` counts the connections and notes when one closes. `sdk`
and `chat` are the client side: the official SDK over a given transport.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import httpx2
import openai
import trio

COMPLETION = json.dumps({
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "test-model",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "hi there"},
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}).encode()

Handler = Callable[[trio.SocketStream], Awaitable[None]]


class Server:
    """A raw TCP server: counts connections, and what is open at once."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.port = 0
        self.closed = trio.Event()
        """Set when a connection has closed."""

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(stream)
        except trio.BrokenResourceError:
            pass
        finally:
            self.open -= 1
            await trio.aclose_forcefully(stream)
            self.closed.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


StartServer = Callable[[Handler], Awaitable[Server]]


async def start_raw_server(nursery: trio.Nursery, handler: Handler) -> Server:
    """Serve ``handler`` on a free loopback port until ``nursery`` is cancelled."""
    server = Server(handler)
    listeners = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    return server


class Requests:
    """Reads requests (head and content-length body) off one server-side stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> tuple[bytes, bytes] | None:
        """The next request's head and body; None at EOF."""
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += await self.stream.receive_some(65536)
        self.buffer = rest[length:]
        return head, rest[:length]


def response(
    body: bytes = COMPLETION, *, status: bytes = b"200 OK", extra: bytes = b""
) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        + b"content-length: %d\r\n" % len(body) + extra + b"\r\n" + body
    )


async def keep_alive(stream: trio.SocketStream) -> None:
    """Answer every request on the connection with a completion, until the client closes."""
    requests = Requests(stream)
    while await requests.next() is not None:
        await stream.send_all(response())


def reset(stream: trio.SocketStream) -> None:
    """Close so that the peer gets a TCP RST rather than a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


MESSAGES = [{"role": "user", "content": "hello"}]


def sdk(
    url: str, transport: httpx2.AsyncBaseTransport, timeout: float = 5.0
) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="test-key", base_url=url, max_retries=0, timeout=timeout,
        http_client=httpx2.AsyncClient(transport=transport),
    )


async def chat(client: openai.AsyncOpenAI) -> str | None:
    completion = await client.chat.completions.create(model="test-model", messages=MESSAGES)
    return completion.choices[0].message.content
