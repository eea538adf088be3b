"""The load tester's HTTP clients: one request at a time per worker, failures as one exception.

`Transport` is what a worker sends through; `Reply` is what comes back, and `TransportFailure`
is raised when no complete answer came. `RawConnection` is a minimal keep-alive HTTP/1.1 client
on Trio streams with h11 (the upstream client's `actors.upstream.connection`), the default
(``--client raw``): the load tester shares a CPU core with the simulator in benchmarks, and on
the bench machine httpx drove ~380 req/s over one pool of 64 connections (~1,100 req/s with a
client per connection). This client costs ~210 us of CPU per request against
``bench/trivial.py`` (h11's share is ~140 us: the hand-written parser it replaced cost 68 us
in all), so ~2,000-4,000 req/s (``bench.run --only client``), well over the 1,000 needed.
`HttpxTransport` is a worker's view of one shared ``httpx.AsyncClient`` (``--client httpx``),
kept as a cross-check.
"""

from __future__ import annotations

import http.cookiejar
import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import h11
import httpx
import httpx2

from actors.upstream.connection import HTTPConnection, StaleConnection, open_connection


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


class RawConnection:
    """One keep-alive HTTP/1.1 connection (TLS for https URLs), parsed by h11 through
    `actors.upstream.connection.HTTPConnection`.

    Connects on first use and again after the server closes. A request on a reused connection
    that the server had already closed (nothing of the answer arrived) is sent once more on a
    new one, as browsers do. On any failure or cancel the connection is closed; a failure is
    raised as `TransportFailure` named after httpx2's error (``ConnectError``, ``ReadError``,
    ``RemoteProtocolError``...).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._host_header = (b"Host", parts.netloc.encode("ascii"))
        self._connection: HTTPConnection | None = None

    async def request(self, method: str, path: str, headers: str, body: bytes | None) -> Reply:
        fields = [self._host_header]
        fields += [_header(line) for line in headers.split("\r\n") if line]
        if body is not None:
            fields += [(b"Content-Type", b"application/json"),
                       (b"Content-Length", b"%d" % len(body))]
        try:
            head = h11.Request(
                method=method, target=(self._prefix + path).encode("ascii"), headers=fields
            )
            try:
                return await self._exchange(head, body or b"")
            except StaleConnection:
                self._drop()
                return await self._exchange(head, body or b"")
        except BaseException as error:
            self._drop()
            if isinstance(error, httpx2.HTTPError | h11.ProtocolError | StaleConnection):
                raise TransportFailure(type(error).__name__, str(error)) from None
            raise

    async def _exchange(self, head: h11.Request, body: bytes) -> Reply:
        if self._connection is None:
            context = ssl.create_default_context() if self._tls else None
            self._connection = await open_connection(self._host, self._port, context, None)
        connection = self._connection
        await connection.send_request(head, body, None)
        response = await connection.receive_response(None)
        parts = []
        while data := await connection.receive_data(None):
            parts.append(data)
        if not connection.finish():
            self._drop()
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in response.headers:
            if name == b"set-cookie":
                cookies.append(value.decode("latin-1"))
            else:
                headers[name.decode("latin-1")] = value.decode("latin-1")
        return Reply(response.status_code, headers, cookies, b"".join(parts))

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def aclose(self) -> None:
        self._drop()


def _header(line: str) -> tuple[bytes, bytes]:
    name, _, value = line.partition(":")
    return name.encode("latin-1"), value.strip().encode("latin-1")


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
