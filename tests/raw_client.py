"""Raw HTTP/1.x over a Trio socket, for attacks an HTTP client library will not send.

``exchange`` writes bytes exactly as given and reads until the server closes the connection;
``parse_responses`` splits what came back into responses (status, headers, body). A server
that keeps the connection open makes ``exchange`` raise ``ConnectionLeftOpen`` after
``wait_s``: that bound only guards against a hang, nothing asserts on how long anything took.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import trio


class ConnectionLeftOpen(AssertionError):
    """The server answered (or not) and kept the connection open."""

    def __init__(self, received: bytes) -> None:
        super().__init__(f"the server kept the connection open after sending {received[:300]!r}")
        self.received = received


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


async def open_stream(url: str) -> trio.SocketStream:
    host, port = host_port(url)
    return await trio.open_tcp_stream(host, port)


async def read_until_closed(stream: trio.SocketStream, wait_s: float = 10.0) -> bytes:
    """Everything the server sends until it closes; ConnectionLeftOpen if it does not."""
    received = b""
    with trio.move_on_after(wait_s):
        while chunk := await stream.receive_some(65536):
            received += chunk
        return received
    raise ConnectionLeftOpen(received)


async def exchange(url: str, data: bytes, wait_s: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and return all the server sent before it closed."""
    stream = await open_stream(url)
    try:
        await stream.send_all(data)
        return await read_until_closed(stream, wait_s)
    finally:
        await stream.aclose()


def parse_responses(data: bytes) -> list[RawResponse]:
    """Split a byte stream into HTTP/1.x responses (Content-Length framed, or to the end)."""
    responses = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, f"an incomplete response head: {data[:200]!r}"
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = []
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = next((int(value) for name, value in headers if name == "content-length"), None)
        if length is None:
            length = 0 if int(status_line.split()[1]) in (204, 304) else len(rest)
        responses.append(RawResponse(int(status_line.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return responses


def request_bytes(method: str, path: str, *, version: str = "1.1",
                  headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> bytes:
    """One request, written out by hand; adds Host and Content-Length unless given."""
    lines = [f"{method} {path} HTTP/{version}"]
    given = {name.lower() for name, _ in headers or []}
    if "host" not in given:
        lines.append("Host: test")
    if body and "content-length" not in given and "transfer-encoding" not in given:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
