"""Small ASGI helpers shared by the edge and the fast path: read a body, send a response.

Framework-free (no Quart): these speak the ASGI messages Hypercorn sends and expects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Any

import trio

from .errors import BODY_TOO_LARGE, ErrorParts, TooLarge

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientLeft(Exception):
    """The client disconnected before it had sent its whole body."""


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length, if it has a valid one."""
    for name, value in headers:
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return None


async def read_request_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; TooLarge past ``limit`` bytes, ClientLeft on a disconnect.

    Cancelling it drops what was read; the rest stays queued for the next ``receive``.
    """
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft
        body += message.get("body", b"")
        if len(body) > limit:
            raise TooLarge(BODY_TOO_LARGE)
        if not message.get("more_body", False):
            return bytes(body)


async def send_response(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[str, str]]
) -> None:
    """Send a whole response: its head with Content-Length, then its body in one message.

    Cancelled between the two, the client gets a head and a short body: the connection
    cannot be reused, and Hypercorn closes it.
    """
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-length", str(len(body)).encode()),
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers),
        ],
    })
    await send({"type": "http.response.body", "body": body})


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), decoded as Latin-1, or None."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def send_events(
    send: Send, status: int, events: AsyncIterator[bytes], headers: Iterable[tuple[str, str]]
) -> None:
    """Send a streamed response: its head, one body message per chunk of ``events``, then the
    end. ``events`` is closed (``aclose``) however this ends, also when cancelled."""
    async with aclosing(events):
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in headers],
        })
        async for chunk in events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def answer_and_close(
    scope: Scope, receive: Receive, send: Send, parts: ErrorParts, read_first: int = 0
) -> None:
    """Answer with an error, then close the connection.

    The body is read and dropped, up to ``read_first`` bytes before answering and all the
    rest meanwhile. Reading first matters for a small body followed by more bytes (a smuggled
    request): once the response says ``Connection: close``, h11 treats any byte after the
    body as an error, and Hypercorn then closes the socket under a response still being sent.
    Dropping the rest matters because Hypercorn queues at most ``max_app_queue_size`` body
    messages for the app and then waits for it: an app that stopped reading would leave the
    connection, and this task, hanging.

    ``Connection: close`` makes Hypercorn close an HTTP/1 connection after the response
    (HTTP/2 forbids the header; there the stream ends and the connection lives on). Returns
    when Hypercorn reports the disconnect, at once if the client has left; cancelling
    returns at once.
    """
    received = 0
    reading = read_first > 0
    while reading:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        reading = message.get("more_body", False) and received <= read_first
    status, body, headers = parts
    if scope.get("http_version", "1.1").startswith("1"):
        headers = [*headers, ("Connection", "close")]
    async with trio.open_nursery() as nursery:

        async def drop_the_rest() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        nursery.start_soon(drop_the_rest)
        await send_response(send, status, body, headers)
