"""The load tester's HTTP clients: one request at a time per worker, failures as one exception.

`Transport` is what a worker sends through; `Reply` is what comes back, and `TransportFailure`
is raised when no complete answer came. `RawConnection` is a minimal keep-alive HTTP/1.1 client
on Trio streams, the default (``--client raw``): the load tester shares a CPU core with the
simulator in benchmarks, and on the bench machine httpx drove ~380 req/s over one pool of 64
connections (~1,100 req/s with a client per connection) where this client drives ~9,000.
`HttpxTransport` is a worker's view of one shared ``httpx.AsyncClient`` (``--client httpx``),
kept as a cross-check.
"""

from __future__ import annotations

import http.cookiejar
import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import trio

_READ_SIZE = 65536
_MAX_HEAD_BYTES = 64 * 1024


class TransportFailure(Exception):
    """A request got no complete HTTP answer; ``kind`` names why (``ConnectError``...)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass(slots=True)
class Reply:
    """An HTTP answer: header names are lower case, ``Set-Cookie`` values kept apart."""

    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes


class Transport(Protocol):
    """One worker's way to the server: one request at a time."""

    async def request(self, method: str, path: str, headers: str, body: bytes | None) -> Reply:
        """Send a request (``headers`` as ``"Name: value\\r\\n"`` lines); raise TransportFailure."""
        ...

    async def aclose(self) -> None: ...


class _Closed(Exception):
    """The peer closed the connection; ``early`` if before any byte of the answer."""

    def __init__(self, early: bool) -> None:
        super().__init__("connection closed by the server")
        self.early = early


class RawConnection:
    """One keep-alive HTTP/1.1 connection on a Trio stream (TLS for https URLs).

    Connects on first use and again after the server closes. A request on a reused connection
    that the server had already closed (nothing of the answer arrived) is sent once more on a
    new one, as browsers do. On any failure or cancel the connection is closed.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._host_line = f"Host: {parts.netloc}\r\n"
        self._stream: trio.abc.Stream | None = None
        self._buffer = bytearray()

    async def request(self, method: str, path: str, headers: str, body: bytes | None) -> Reply:
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._host_line}{headers}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode("latin-1") + (body or b"")
        reused = self._stream is not None
        try:
            try:
                return await self._exchange(method, data)
            except _Closed as closed:
                if not (closed.early and reused):
                    raise
            self._drop()
            return await self._exchange(method, data)
        except BaseException as error:
            self._drop()
            if isinstance(error, _Closed):
                raise TransportFailure("ConnectionClosed", str(error)) from None
            if isinstance(error, trio.BrokenResourceError | ConnectionError):
                raise TransportFailure("ConnectionBroken", str(error.__cause__ or error)) from None
            raise

    async def _exchange(self, method: str, data: bytes) -> Reply:
        if self._stream is None:
            self._stream = await self._connect()
            self._buffer.clear()
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, ConnectionError):
            raise _Closed(early=True) from None
        return await self._read_reply(method)

    async def _connect(self) -> trio.abc.Stream:
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(self._host, self._port)
            if self._tls:
                stream = trio.SSLStream(
                    stream, ssl.create_default_context(), server_hostname=self._host
                )
                await stream.do_handshake()
        except (OSError, trio.BrokenResourceError) as error:
            raise TransportFailure("ConnectError", str(error)) from None
        return stream

    def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            if isinstance(stream, trio.SocketStream):
                stream.socket.close()  # synchronous: safe inside a cancelled scope
            else:
                trio.lowlevel.spawn_system_task(trio.aclose_forcefully, stream)

    async def _fill(self, early: bool = False) -> None:
        assert self._stream is not None
        try:
            data = await self._stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, ConnectionError):
            raise _Closed(early) from None
        if not data:
            raise _Closed(early)
        self._buffer += data

    async def _read_reply(self, method: str) -> Reply:
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > _MAX_HEAD_BYTES:
                raise TransportFailure("ProtocolError", "response head too large")
            await self._fill(early=not buffer)
        lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        try:
            status = int(rest[:3])
        except ValueError:
            raise TransportFailure("ProtocolError", f"bad status line {lines[0][:80]!r}") from None
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "set-cookie":
                cookies.append(value.strip())
            else:
                headers[name] = value.strip()
        keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if method == "HEAD" or status in (204, 304) or status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
        elif "content-length" in headers:
            body = await self._read_exactly(int(headers["content-length"]))
        else:
            body = await self._read_to_close()
            keep_alive = False
        if not keep_alive:
            self._drop()
        return Reply(status, headers, cookies, body)

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        body = bytes(self._buffer[:size])
        del self._buffer[:size]
        return body

    async def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def _read_chunked(self) -> bytes:
        chunks = []
        while size := int((await self._read_line()).split(b";")[0], 16):
            chunks.append(await self._read_exactly(size))
            await self._read_exactly(2)
        while await self._read_line():
            pass  # trailers
        return b"".join(chunks)

    async def _read_to_close(self) -> bytes:
        try:
            while True:
                await self._fill()
        except _Closed:
            pass
        body = bytes(self._buffer)
        self._buffer.clear()
        return body

    async def aclose(self) -> None:
        self._drop()


class _RejectCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False  # the shared client must not mix conversations' cookies


class HttpxTransport:
    """A worker's view of one ``httpx.AsyncClient`` shared by all workers (``--client httpx``)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @staticmethod
    def shared_client(url: str, concurrency: int) -> httpx.AsyncClient:
        """The client all workers share: ``concurrency`` connections, no cookie jar."""
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        cookies = http.cookiejar.CookieJar(policy=_RejectCookies())
        return httpx.AsyncClient(base_url=url, limits=limits, timeout=None, cookies=cookies)

    async def request(self, method: str, path: str, headers: str, body: bytes | None) -> Reply:
        header_map = dict(
            line.split(": ", 1) for line in headers.split("\r\n") if line
        )
        if body is not None:
            header_map["Content-Type"] = "application/json"
        try:
            response = await self._client.request(method, path, headers=header_map, content=body)
        except httpx.TransportError as error:
            raise TransportFailure(type(error).__name__, str(error)) from None
        return Reply(
            response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.headers.get_list("set-cookie"),
            response.content,
        )

    async def aclose(self) -> None:
        pass  # the shared client is closed by whoever opened it
