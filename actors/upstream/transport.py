"""A lean HTTP/1.1 transport for the upstream client: `TrioHTTP11Transport`.

Why: an OpenAI call through httpx2's default transport (the httpcore2 pool, over AnyIO, over
Trio) spent about twice as much CPU in the transport as in the whole SDK above it, and the
server has to do hundreds of turns a second on one core. This transport talks HTTP/1.1 on
Trio streams directly, keeps connections alive in a small pool and parses responses with a
short hand-written parser (h11 costs ~100 us per request and response, this ~14 us). It
plugs into ``httpx2.AsyncClient(transport=...)``, so the SDK, its headers, auth, error
classes and content decoding (gzip etc.) are unchanged.

What it does:

* HTTP/1.1 over TCP (``trio.open_tcp_stream``) or TLS (``trio.SSLStream`` over it, checking
  the certificate and host name; the default context is httpx2's, so the same CA store as
  before).
* Keep-alive: a pool of idle connections per origin (scheme, host, port), newest first.
  Connections idle for ``keepalive_expiry`` seconds are closed rather than reused (the
  default stays under the 5 s that many servers allow). A reused connection that the server
  has closed meanwhile (the send fails, or EOF or a reset arrives before any byte of the
  response) is retried once, on a fresh connection.
* At most ``max_connections`` open connections in total: a request holds a token of a
  ``trio.CapacityLimiter`` while it uses a connection, and idle connections of other origins
  are closed to make room. Waiting for a token honours the ``pool`` timeout.
* Timeouts from the request's ``timeout`` extension, as httpx2 fills it in: ``connect``,
  ``write``, ``read`` (the longest wait for the next bytes, as in httpx) and ``pool``; raised as
  ``httpx2.ConnectTimeout``, ``WriteTimeout``, ``ReadTimeout``, ``PoolTimeout``. Failing to
  connect raises ``httpx2.ConnectError``; a broken connection while sending or reading
  raises ``WriteError`` / ``ReadError``; a response cut short or malformed raises
  ``RemoteProtocolError``. The SDK turns all of these into ``openai.APITimeoutError`` /
  ``openai.APIConnectionError``.
* A connection goes back to the pool only after a complete, well-framed response without
  ``connection: close``. After an error, a timeout or a cancellation it is closed (and the
  ``trio.Cancelled`` propagates).

What it does not do: HTTP/2; proxies (with ``HTTPS_PROXY`` etc. set, httpx2 mounts its own
proxy transport for those URLs, so they bypass this one); streaming responses (the whole body
is read before ``handle_async_request`` returns, so an SSE stream arrives all at once at the
end); ``Expect: 100-continue`` or protocol upgrades; bodies larger than memory.
"""

from __future__ import annotations

import datetime
import math
import ssl
import time
from collections import deque

import httpx2
import trio

from .http11 import (
    BROKEN,
    ParsedResponse,
    ResponseReader,
    StaleConnection,
    describe_error,
    encode_request,
)

__all__ = ["TrioHTTP11Transport"]

Origin = tuple[bytes, bytes, int]
"""(scheme, host, port) as httpx2's URL gives them: ``(b"https", b"api.openai.com", 443)``."""

Timeouts = dict[str, float | None]

def _deadline(seconds: float | None) -> float:
    return math.inf if seconds is None else trio.current_time() + seconds


class _Connection:
    """One open connection, used by one request at a time.

    ``stream`` is a ``trio.SocketStream``, or a ``trio.SSLStream`` over one; ``socket`` is the
    Trio socket underneath, closed directly so that closing never blocks, works while
    cancelled, and skips the TLS close_notify.
    """

    __slots__ = ("stream", "socket", "expires")

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = sock
        self.expires = 0.0
        """When it has been idle too long to be reused (Trio clock); set as it goes idle."""

    def close(self) -> None:
        self.socket.close()


class TrioHTTP11Transport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections on Trio sockets, for ``httpx2.AsyncClient``.

    See the module docstring for what it does and does not do. ``ssl_context`` defaults to
    ``httpx2.create_ssl_context()``, made at the first https request.
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
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._idle_count = 0
        self._closed = False

    @property
    def idle_connections(self) -> int:
        """How many open connections wait in the pool."""
        return self._idle_count

    @property
    def active_connections(self) -> int:
        """How many requests are using (or opening) a connection right now."""
        return self._limiter.borrowed_tokens

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.perf_counter()
        url = request.url
        scheme = url.raw_scheme
        if scheme == b"https":
            port = url.port or 443
        elif scheme == b"http":
            port = url.port or 80
        else:
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        try:
            body = request.content
        except httpx2.RequestNotRead:
            body = await request.aread()
        message = encode_request(request, body)
        timeouts: Timeouts = request.extensions.get("timeout") or {}

        limiter = self._limiter
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            with trio.CancelScope(deadline=_deadline(timeouts.get("pool"))) as scope:
                await limiter.acquire()
            if scope.cancelled_caught:
                raise httpx2.PoolTimeout("timed out waiting for a free connection") from None
        try:
            response = await self._send(
                (scheme, url.raw_host, port), message, request.method == "HEAD", timeouts
            )
        finally:
            limiter.release()
        result = httpx2.Response(
            response.status,
            headers=response.headers,
            stream=httpx2.ByteStream(response.body),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
        )
        # Decode (gzip etc.) now, with the sync reader: the client's aread() then has nothing
        # left to do, and that saves ~10 us of async-generator machinery per call. The
        # response is closed by then, so its elapsed time is set here rather than by the client.
        result.read()
        result.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        return result

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        self._closed = True
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for connections in idle.values():
            for connection in connections:
                connection.close()

    # -- the pool ----------------------------------------------------------------------------

    async def _send(
        self, origin: Origin, message: bytes, head: bool, timeouts: Timeouts
    ) -> ParsedResponse:
        """One exchange on an idle or a new connection; the caller holds a limiter token."""
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(connection, origin, message, head, timeouts, True)
            except StaleConnection:
                pass  # it is closed; the request was not answered, so send it again
        connection = await self._connect(origin, timeouts)
        return await self._exchange(connection, origin, message, head, timeouts, False)

    def _take_idle(self, origin: Origin) -> _Connection | None:
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

    def _put_idle(self, origin: Origin, connection: _Connection) -> None:
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

    # -- one connection ----------------------------------------------------------------------

    async def _connect(self, origin: Origin, timeouts: Timeouts) -> _Connection:
        self._make_room()
        scheme, host, port = origin
        connection: _Connection | None = None
        with trio.CancelScope(deadline=_deadline(timeouts.get("connect"))) as scope:
            try:
                tcp = await trio.open_tcp_stream(host, port)
            except OSError as error:
                raise httpx2.ConnectError(describe_error(error)) from error
            if scheme == b"http":
                connection = _Connection(tcp, tcp.socket)
            else:
                try:
                    tls = trio.SSLStream(
                        tcp, self._ssl(), server_hostname=host.decode("ascii"),
                        https_compatible=True,
                    )
                    await tls.do_handshake()
                except BROKEN as error:  # ssl.SSLError is an OSError
                    tcp.socket.close()
                    raise httpx2.ConnectError(describe_error(error)) from error
                except BaseException:
                    tcp.socket.close()
                    raise
                connection = _Connection(tls, tcp.socket)
        if connection is None:
            assert scope.cancelled_caught
            raise httpx2.ConnectTimeout("timed out connecting to the server")
        return connection

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = httpx2.create_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def _exchange(
        self, connection: _Connection, origin: Origin, message: bytes, head: bool,
        timeouts: Timeouts, reused: bool,
    ) -> ParsedResponse:
        """Send ``message``, read the whole response, then pool or close the connection."""
        response = None
        writing = True
        try:
            with trio.CancelScope(deadline=_deadline(timeouts.get("write"))) as scope:
                try:
                    await connection.stream.send_all(message)
                except BROKEN as error:
                    if reused:
                        raise StaleConnection from error
                    raise httpx2.WriteError(describe_error(error)) from error
                writing = False
                reader = ResponseReader(connection, scope, timeouts.get("read"), reused)
                response = await reader.response(head)
            if response is None:
                assert scope.cancelled_caught
                if writing:
                    raise httpx2.WriteTimeout("timed out sending the request")
                raise httpx2.ReadTimeout("timed out waiting for the response")
            return response
        finally:
            if response is not None and response.reusable:
                self._put_idle(origin, connection)
            else:
                connection.close()
