"""One HTTP/1.1 client connection on a Trio stream, framed and parsed by h11.

`open_connection` connects (TCP, and TLS when given a context); an `HTTPConnection` then
carries one exchange at a time, as httpcore's ``_async/http11.py`` does: `send_request` (the
request, its body and its end in one write), `receive_response` (the head; 1xx interim
responses are skipped), `receive_data` until it returns ``b""`` (the end of the body), and
`finish`, which says whether the connection may carry another request. h11 does all the
framing: ``content-length``, chunked bodies, bodies that end with the connection, HEAD, 204
and 304 without a body, ``connection: close`` and HTTP/1.0.

Used by the upstream transport (`actors.upstream.transport`) and by the load tester's raw
client (`web.loadtest.http`). Failures are httpx2's transport errors, so both report them
alike: ``ConnectError`` / ``ConnectTimeout`` while connecting (the ``__cause__`` is the
``OSError`` or ``ssl.SSLError``, e.g. ``ssl.SSLCertVerificationError``), ``WriteError`` /
``WriteTimeout`` while sending, ``ReadError`` / ``ReadTimeout`` while receiving,
``RemoteProtocolError`` when the server breaks HTTP or closes mid-response,
``LocalProtocolError`` for a request h11 refuses (a line break in a header, say). A connection
that served a request before and turns out to be closed before any byte of the next response
raises `StaleConnection` instead: that request was not answered and may be sent again.

Timeouts are per operation: the write, and each wait for bytes (a body that keeps arriving
never times out). Cancellation propagates; the caller then closes the connection, as after
any error: an exchange cut short leaves it unusable. `HTTPConnection.close` never blocks.
"""

from __future__ import annotations

import math
import ssl

import h11
import httpx2
import trio

__all__ = ["BROKEN", "HTTPConnection", "StaleConnection", "open_connection"]

BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
"""What a broken connection raises (Trio streams wrap the OSError in BrokenResourceError)."""

_RECEIVE_SIZE = 64 * 1024
_MAX_HEAD = 64 * 1024
"""The longest response head (or chunk-size line, or trailer section) h11 accepts."""


class StaleConnection(Exception):
    """A reused connection was closed by the server before any byte of the response arrived."""


def _deadline(seconds: float | None) -> float:
    return math.inf if seconds is None else trio.current_time() + seconds


def describe_error(error: BaseException) -> str:
    """The message of the OSError under a Trio stream error, or the error's own."""
    if isinstance(error, trio.BrokenResourceError) and error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


async def open_connection(
    host: str, port: int, ssl_context: ssl.SSLContext | None, connect_timeout: float | None
) -> HTTPConnection:
    """Connect to ``host:port``; with ``ssl_context``, TLS checking the certificate for ``host``.

    Raises ``httpx2.ConnectError`` from the OSError or SSL error, ``httpx2.ConnectTimeout``
    after ``connect_timeout`` seconds (None: no limit). Cancelled or failed, it leaves nothing open.
    """
    with trio.CancelScope(deadline=_deadline(connect_timeout)) as scope:
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as error:
            raise httpx2.ConnectError(describe_error(error)) from error
        if ssl_context is None:
            return HTTPConnection(tcp, tcp.socket)
        try:
            tls = trio.SSLStream(tcp, ssl_context, server_hostname=host, https_compatible=True)
            await tls.do_handshake()
        except BROKEN as error:  # ssl.SSLError is an OSError; Trio wraps it
            tcp.socket.close()
            cause = error.__cause__ if isinstance(error, trio.BrokenResourceError) else None
            raise httpx2.ConnectError(describe_error(error)) from (cause or error)
        except BaseException:
            tcp.socket.close()
            raise
        return HTTPConnection(tls, tcp.socket)
    assert scope.cancelled_caught
    raise httpx2.ConnectTimeout(f"timed out connecting to {host}:{port}")


class HTTPConnection:
    """One open connection and h11's state for it; one exchange at a time.

    ``stream`` is a ``trio.SocketStream`` or a ``trio.SSLStream`` over one; ``socket`` is the
    socket underneath, closed directly so that `close` never blocks, works while cancelled
    and skips the TLS close_notify. ``expires`` is for the pool that keeps it idle.
    """

    __slots__ = ("stream", "socket", "expires", "_h11", "_served", "_received")

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = sock
        self.expires = 0.0
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self._served = 0
        self._received = False  # any byte of the current response yet

    @property
    def served(self) -> int:
        """How many exchanges this connection has completed."""
        return self._served

    async def send_request(
        self, request: h11.Request, body: bytes, write_timeout: float | None
    ) -> None:
        """Send the request head, ``body`` (framed as the head says) and its end."""
        try:
            data = self._h11.send(request) or b""
            if body:
                data += self._h11.send(h11.Data(data=body)) or b""
            data += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as error:
            raise httpx2.LocalProtocolError(str(error)) from error
        with trio.CancelScope(deadline=_deadline(write_timeout)) as scope:
            try:
                await self.stream.send_all(data)
            except BROKEN as error:
                if self._served:
                    raise StaleConnection from error
                raise httpx2.WriteError(describe_error(error)) from error
        if scope.cancelled_caught:
            raise httpx2.WriteTimeout("timed out sending the request")

    async def receive_response(self, read_timeout: float | None) -> h11.Response:
        """The head of the final response (interim 1xx responses are skipped)."""
        while True:
            event = await self._next_event(read_timeout)
            if isinstance(event, h11.Response):
                return event

    async def receive_data(self, read_timeout: float | None) -> bytes:
        """The next piece of the body; ``b""`` once it has ended."""
        while True:
            event = await self._next_event(read_timeout)
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b""

    def finish(self) -> bool:
        """After the end of the body: True, ready for the next request, if the exchange was
        complete and the server keeps the connection open (no ``connection: close``, not
        HTTP/1.0, no stray bytes after the response); False if it must be closed."""
        state = self._h11
        if state.our_state is not h11.DONE or state.their_state is not h11.DONE:
            return False
        if state.trailing_data[0]:
            return False  # bytes past the end of the response: the framing is off
        state.start_next_cycle()
        self._served += 1
        self._received = False
        return True

    def close(self) -> None:
        """Close at once, without waiting and without a TLS goodbye."""
        self.socket.close()

    async def _next_event(self, read_timeout: float | None) -> object:
        state = self._h11
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as error:
                raise httpx2.RemoteProtocolError(str(error)) from error
            if event is not h11.NEED_DATA:
                return event
            data = b""
            with trio.CancelScope(deadline=_deadline(read_timeout)) as scope:
                try:
                    data = bytes(await self.stream.receive_some(_RECEIVE_SIZE))  # no copy if bytes
                except BROKEN as error:
                    if self._served and not self._received:
                        raise StaleConnection from error
                    raise httpx2.ReadError(describe_error(error)) from error
            if scope.cancelled_caught:
                raise httpx2.ReadTimeout("timed out waiting for the response")
            if data:
                self._received = True
            elif self._served and not self._received:
                raise StaleConnection
            elif state.their_state is h11.SEND_RESPONSE:
                raise httpx2.RemoteProtocolError("server disconnected without a response")
            state.receive_data(data)
