"""HTTP/1.1 on the wire for `actors.transport`: encode a request, read and parse a response.

A short hand-written parser (h11 costs ~100 us per request and response; this ~14 us):
status line, headers, ``content-length`` and ``transfer-encoding: chunked`` bodies (with
extensions and trailers), bodies that end when the connection closes, 1xx responses skipped,
HEAD/204/304 without a body. The response head (and chunk-size lines, trailers) is bounded
at 64 KiB; bodies are read whole, unbounded. Header values with line breaks are refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import httpx2
import trio

if TYPE_CHECKING:
    from .transport import _Connection

_MAX_HEAD = 64 * 1024
"""The longest response head accepted; the same bound for a chunk-size line and trailers."""

_RECEIVE_SIZE = 64 * 1024

_NO_BODY_STATUS = frozenset({204, 304})

_HEX_DIGITS = b"0123456789abcdefABCDEF"

_SPACE_OR_TAB = (32, 9)

BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
"""What a broken connection raises (Trio streams wrap the OSError in BrokenResourceError)."""



class StaleConnection(Exception):
    """A reused connection turned out to be closed before any byte of a response arrived."""



class ParsedResponse:
    """A parsed response, and whether its connection may serve another request."""

    __slots__ = ("status", "reason", "headers", "body", "reusable")

    def __init__(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
        reusable: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.reusable = reusable



def describe_error(error: BaseException) -> str:
    if isinstance(error, trio.BrokenResourceError) and error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


def encode_request(request: httpx2.Request, body: bytes) -> bytes:
    """The request line, the headers exactly as httpx2 prepared them, and the body."""
    raw = request.headers.raw
    chunked = False
    for name, value in raw:
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            chunked = value.rstrip().lower().endswith(b"chunked")
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [name + b": " + value for name, value in raw]
    lines += [b"", b""]
    head = b"\r\n".join(lines)
    # Every line break must be one of ours: no header injection through a name or value.
    if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
        raise httpx2.LocalProtocolError("line break inside the request line or a header")
    if chunked:  # httpx2 read the whole body already: send it as one chunk
        body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    return head + body


class ResponseReader:
    """Reads and parses one response from a connection into a buffer.

    Every wait for bytes gets a fresh ``read`` deadline on ``scope``. Raises
    `StaleConnection` if the connection was ``reused`` and ends before any byte arrives,
    `httpx2.ReadError` if it breaks, `httpx2.RemoteProtocolError` if it ends early or the
    response is malformed.
    """

    __slots__ = ("connection", "scope", "read_timeout", "reused", "buffer", "received")

    def __init__(
        self, connection: _Connection, scope: trio.CancelScope, read_timeout: float | None,
        reused: bool,
    ) -> None:
        self.connection = connection
        self.scope = scope
        self.read_timeout = read_timeout
        self.reused = reused
        self.buffer = bytearray()
        self.received = False

    async def more(self, what: str | None) -> bool:
        """Append the next bytes to the buffer. At EOF, return False if ``what`` is None,
        else raise: ``what`` names the part of the response that EOF cut short."""
        self._renew_deadline()
        try:
            data = await self.connection.stream.receive_some(_RECEIVE_SIZE)
        except BROKEN as error:
            if self.reused and not self.received:
                raise StaleConnection from error
            raise httpx2.ReadError(describe_error(error)) from error
        if not data:
            if self.reused and not self.received:
                raise StaleConnection
            if what is None:
                return False
            raise httpx2.RemoteProtocolError(f"server disconnected before the end of {what}")
        self.buffer += data
        self.received = True
        return True

    def _renew_deadline(self) -> None:
        """Move the deadline to ``read_timeout`` from now, give or take 1%.

        Moving a Trio deadline costs a few microseconds, and the first read usually follows
        the write by microseconds; so the deadline only moves when it would move by more than
        1% of the timeout (a 60 s timeout ends between 59.4 and 60 s after the last bytes).
        """
        scope = self.scope
        if self.read_timeout is None:
            if scope.deadline != math.inf:
                scope.deadline = math.inf
            return
        deadline = trio.current_time() + self.read_timeout
        if abs(deadline - scope.deadline) > 0.01 * self.read_timeout:
            scope.deadline = deadline

    async def response(self, head: bool) -> ParsedResponse:
        """The next final response; ``head`` when it answers a HEAD request (no body)."""
        buffer = self.buffer
        while True:  # until a final, non-1xx, response
            searched = 0
            while (end := buffer.find(b"\r\n\r\n", searched)) < 0:
                if len(buffer) > _MAX_HEAD:
                    raise httpx2.RemoteProtocolError("response head too long")
                searched = max(0, len(buffer) - 3)
                await self.more("the response head")
            lines = bytes(buffer[:end]).split(b"\r\n")
            start = end + 4
            status_line = lines[0].split(b" ", 2)
            version = status_line[0]
            code = status_line[1] if len(status_line) > 1 else b""
            if version[:7] != b"HTTP/1." or len(code) != 3 or not code.isdigit():
                raise httpx2.RemoteProtocolError(f"malformed status line {lines[0][:100]!r}")
            status = int(code)
            if not 100 <= status < 200:
                break
            if status == 101:
                raise httpx2.RemoteProtocolError("unexpected protocol switch (101)")
            del buffer[:start]  # an interim response (100 Continue, 103 Early Hints)
        reason = status_line[2] if len(status_line) == 3 else b""

        headers: list[tuple[bytes, bytes]] = []
        keep_alive = version == b"HTTP/1.1"
        content_length: int | None = None
        chunked = until_close = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[0] in _SPACE_OR_TAB or name[-1] in _SPACE_OR_TAB:
                raise httpx2.RemoteProtocolError(f"malformed header line {line[:100]!r}")
            value = value.strip(b" \t")
            headers.append((name, value))
            length = len(name)
            if length == 14 and name.lower() == b"content-length":
                if not value.isdigit() or content_length not in (None, int(value)):
                    raise httpx2.RemoteProtocolError(f"bad content-length {value[:40]!r}")
                content_length = int(value)
            elif length == 17 and name.lower() == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip(b" \t") == b"chunked"
                until_close = not chunked
            elif length == 10 and name.lower() == b"connection":
                if b"close" in [token.strip(b" \t") for token in value.lower().split(b",")]:
                    keep_alive = False

        if head or status in _NO_BODY_STATUS:
            return ParsedResponse(status, reason, headers, b"", keep_alive and len(buffer) == start)
        if (chunked or until_close) and content_length is not None:
            # transfer-encoding wins; a server that sends both gets no second request here.
            content_length = None
            keep_alive = False
        if chunked:
            body, end = await self._chunked_body(start)
        elif content_length is not None:
            end = start + content_length
            while len(buffer) < end:
                await self.more("the response body")
            body = bytes(buffer[start:end])
        else:  # no framing: the body ends with the connection
            while await self.more(None):
                pass
            return ParsedResponse(status, reason, headers, bytes(buffer[start:]), False)
        # Bytes past the end of the response are a protocol error: do not reuse.
        return ParsedResponse(status, reason, headers, body, keep_alive and len(buffer) == end)

    async def _chunked_body(self, position: int) -> tuple[bytes, int]:
        """Decode a chunked body from ``buffer[position]``; the body and where it ended."""
        buffer = self.buffer
        parts: list[bytes] = []
        while True:
            while (line_end := buffer.find(b"\r\n", position)) < 0:
                if len(buffer) - position > _MAX_HEAD:
                    raise httpx2.RemoteProtocolError("chunk size line too long")
                await self.more("a chunked body")
            size_field = bytes(buffer[position:line_end]).split(b";", 1)[0].strip(b" \t")
            if not size_field or len(size_field) > 16 or size_field.strip(_HEX_DIGITS):
                raise httpx2.RemoteProtocolError(f"bad chunk size {size_field[:40]!r}")
            size = int(size_field, 16)
            position = line_end + 2
            if size == 0:
                break
            while len(buffer) < position + size + 2:
                await self.more("a chunked body")
            if buffer[position + size:position + size + 2] != b"\r\n":
                raise httpx2.RemoteProtocolError("chunk data not followed by CRLF")
            parts.append(bytes(buffer[position:position + size]))
            position += size + 2
        trailers_start = position
        while True:  # trailer fields, ignored, up to an empty line
            while (line_end := buffer.find(b"\r\n", position)) < 0:
                if len(buffer) - trailers_start > _MAX_HEAD:
                    raise httpx2.RemoteProtocolError("chunked trailers too long")
                await self.more("a chunked body")
            empty = line_end == position
            position = line_end + 2
            if empty:
                return b"".join(parts), position
