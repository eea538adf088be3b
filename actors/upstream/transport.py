"""A Trio HTTP/1.1 connection pool for the upstream client: `TrioHTTP11Transport`.

Why a pool of our own: an SDK call through httpx2's default transport (the httpcore2 pool,
over AnyIO, over Trio) costs ~1,390 us of CPU; through this one ~1,020 us (``python -m
bench.transport_cpu``: sequential ``OpenAIUpstream.complete`` calls against the simulator in
another process, this process's CPU per call, best of interleaved rounds; the hand-written
parser this replaced: ~880 us, h11 costs the difference). The server makes hundreds of calls
a second on one core. It plugs into ``httpx2.AsyncClient(transport=...)``,
so the SDK, its headers, auth, error classes and content decoding (gzip etc.) are unchanged.
HTTP on the wire is h11's, through `actors.upstream.connection`.

What it does:

* HTTP/1.1 over TCP, or TLS (checking the certificate and host name; the default context is
  httpx2's, so the same CA store, and ``SSL_CERT_FILE`` adds CAs).
* Response bodies stream: ``handle_async_request`` returns once the head has arrived, and the
  response's stream owns the connection until the body has ended or ``aclose()`` is called,
  as httpcore's ``HTTP11ConnectionByteStream`` does. The connection goes back to the pool only
  after a complete, well-framed body without ``connection: close``; a body closed early, an
  error, a timeout or a cancellation (which propagates) closes it.
* Keep-alive: idle connections per origin (scheme, host, port), newest first. Connections
  idle for ``keepalive_expiry`` seconds are closed rather than reused (the default stays under
  the 5 s that many servers allow). A reused connection that the server has closed meanwhile
  (the send fails, or EOF or a reset arrives before any byte of the response) is retried
  once, on a fresh connection.
* At most ``max_connections`` open connections in total: a request holds a token of a
  ``trio.CapacityLimiter`` from before it connects until its body ends or is closed, and idle
  connections of other origins are closed to make room. Waiting for a token honours the
  ``pool`` timeout (``httpx2.PoolTimeout``).
* Timeouts from the request's ``timeout`` extension, as httpx2 fills it in: ``connect``,
  ``write``, ``read`` (the longest wait for the next bytes, as in httpx) and ``pool``. Errors
  are httpx2's (see `actors.upstream.connection`); the SDK turns them into
  ``openai.APITimeoutError`` / ``openai.APIConnectionError``.

What it does not do: HTTP/2; proxies (httpx2 reads ``HTTPS_PROXY`` etc. only when it makes
its own transport, ``AsyncClient(transport=None)``, so with this one they are ignored);
``Expect: 100-continue`` or
protocol upgrades; request bodies larger than memory (they are read whole before sending).
"""

from __future__ import annotations

import math
import ssl
from collections import deque

import h11
import httpx2
import trio

from .connection import HTTPConnection, StaleConnection, open_connection

__all__ = ["TrioHTTP11Transport"]

Origin = tuple[bytes, bytes, int]
"""(scheme, host, port) as httpx2's URL gives them: ``(b"https", b"api.openai.com", 443)``."""

Timeouts = dict[str, float | None]


class TrioHTTP11Transport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections on Trio sockets, for ``httpx2.AsyncClient``.

    See the module docstring for what it does and does not do. ``ssl_context`` defaults to
    ``httpx2.create_ssl_context()``, made at the first https request. ``aclose`` closes the
    idle connections; a response still streaming closes its connection when it ends.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._limiter = trio.CapacityLimiter(max_connections)
        self._idle: dict[Origin, deque[HTTPConnection]] = {}
        self._idle_count = 0
        self._closed = False

    @property
    def idle_connections(self) -> int:
        """How many open connections wait in the pool."""
        return self._idle_count

    @property
    def active_connections(self) -> int:
        """How many requests hold a connection (or are opening one) right now."""
        return self._limiter.borrowed_tokens

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin = (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))
        try:
            head = h11.Request(
                method=request.method.encode("ascii"), target=url.raw_path,
                headers=request.headers.raw,
            )
        except h11.LocalProtocolError as error:  # e.g. a line break inside a header
            raise httpx2.LocalProtocolError(str(error)) from error
        try:
            body = request.content
        except httpx2.RequestNotRead:
            body = await request.aread()
        timeouts: Timeouts = request.extensions.get("timeout") or {}

        borrower = object()  # the pool slot's owner, until the body ends or is closed
        limiter = self._limiter
        try:
            limiter.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            pool_timeout = timeouts.get("pool")
            with trio.move_on_after(math.inf if pool_timeout is None else pool_timeout) as scope:
                await limiter.acquire_on_behalf_of(borrower)
            if scope.cancelled_caught:
                raise httpx2.PoolTimeout("timed out waiting for a free connection") from None
        try:
            connection, response = await self._send(origin, head, body, timeouts)
        except BaseException:
            limiter.release_on_behalf_of(borrower)
            raise
        stream = _ResponseBody(self, borrower, origin, connection, timeouts.get("read"))
        return httpx2.Response(
            response.status_code,
            headers=response.headers.raw_items(),
            stream=stream,
            request=request,
            extensions={
                "http_version": b"HTTP/" + response.http_version,
                "reason_phrase": response.reason,
            },
        )

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their response ends."""
        self._closed = True
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for connections in idle.values():
            for connection in connections:
                connection.close()

    # -- the pool ----------------------------------------------------------------------------

    async def _send(
        self, origin: Origin, head: h11.Request, body: bytes, timeouts: Timeouts
    ) -> tuple[HTTPConnection, h11.Response]:
        """Send on an idle or a new connection, up to the response head."""
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return connection, await _exchange(connection, head, body, timeouts)
            except StaleConnection:
                pass  # closed; the request was not answered, so send it again
        connection = await self._connect(origin, timeouts)
        return connection, await _exchange(connection, head, body, timeouts)

    def _release(
        self, borrower: object, origin: Origin, connection: HTTPConnection, reusable: bool
    ) -> None:
        """A response is done with its connection: pool it or close it, free the slot."""
        if reusable:
            self._put_idle(origin, connection)
        else:
            connection.close()
        self._limiter.release_on_behalf_of(borrower)

    def _take_idle(self, origin: Origin) -> HTTPConnection | None:
        connections = self._idle.get(origin)
        if not connections:
            return None
        connection = connections.pop()
        self._idle_count -= 1
        if connection.expires > trio.current_time():
            return connection
        # The newest idle connection has expired, so have all the older ones.
        connection.close()
        self._idle_count -= len(connections)
        for older in connections:
            older.close()
        connections.clear()
        return None

    def _put_idle(self, origin: Origin, connection: HTTPConnection) -> None:
        if self._closed:
            connection.close()
            return
        now = trio.current_time()
        connection.expires = now + self._keepalive_expiry
        connections = self._idle.get(origin)
        if connections is None:
            connections = self._idle[origin] = deque()
        while connections and connections[0].expires <= now:
            connections.popleft().close()
            self._idle_count -= 1
        connections.append(connection)
        self._idle_count += 1

    def _make_room(self) -> None:
        """Close the oldest idle connections (of other origins) so that one more fits.

        The caller holds a limiter token and found no idle connection for its origin.
        """
        excess = self._limiter.borrowed_tokens + self._idle_count - self._max_connections
        for connections in self._idle.values():
            while excess > 0 and connections:
                connections.popleft().close()
                self._idle_count -= 1
                excess -= 1

    async def _connect(self, origin: Origin, timeouts: Timeouts) -> HTTPConnection:
        self._make_room()
        scheme, host, port = origin
        context = self._ssl() if scheme == b"https" else None
        return await open_connection(host.decode("ascii"), port, context, timeouts.get("connect"))

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = httpx2.create_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context


async def _exchange(
    connection: HTTPConnection, head: h11.Request, body: bytes, timeouts: Timeouts
) -> h11.Response:
    """Send the request and read the response head; on any failure the connection is closed."""
    try:
        await connection.send_request(head, body, timeouts.get("write"))
        return await connection.receive_response(timeouts.get("read"))
    except BaseException:
        connection.close()
        raise


class _ResponseBody(httpx2.AsyncByteStream):
    """A response body as it arrives; it owns its connection and pool slot until it ends.

    Iterating yields the body's bytes. At the end of a complete body the connection goes back
    to the pool (or is closed if the server asked) and the slot is freed; an error, a timeout
    or a cancellation while reading, or ``aclose()`` before the end, closes the connection
    instead. Iterating again after the end (the SDK drains streams) yields nothing.
    """

    def __init__(
        self, pool: TrioHTTP11Transport, borrower: object, origin: Origin,
        connection: HTTPConnection, read_timeout: float | None,
    ) -> None:
        self._pool = pool
        self._borrower = borrower
        self._origin = origin
        self._connection: HTTPConnection | None = connection
        self._read_timeout = read_timeout

    def __aiter__(self) -> _ResponseBody:  # an iterator, not a generator: nothing to finalize
        return self

    async def __anext__(self) -> bytes:
        connection = self._connection
        if connection is None:
            raise StopAsyncIteration
        try:
            data = await connection.receive_data(self._read_timeout)
        except BaseException:
            self._release(reusable=False)
            raise
        if data:
            return data
        self._release(reusable=connection.finish())
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._release(reusable=False)

    def _release(self, reusable: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool._release(self._borrower, self._origin, connection, reusable)
