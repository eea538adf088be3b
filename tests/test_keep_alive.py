"""A keep-alive connection its client has closed does not hold a file descriptor for long.

Hypercorn (0.18) keeps such a socket open (CLOSE_WAIT) until its keep-alive timer ends, so
``server.keep_alive_s`` is what bounds it (issue 11: the soak's file descriptors). The bound
here is a guard against the old 75 s, not a timing assertion.
"""

from __future__ import annotations

import trio

from .conftest import StartServer, make_settings

GUARD_S = 5.0  # far above keep_alive_s below, far below the 75 s it used to be


async def _read_one_response(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head


async def test_a_kept_alive_connection_the_client_closed_is_closed_by_the_server_soon(
    start_server: StartServer, simulator_url: str,
) -> None:
    server = await start_server(make_settings(simulator_url, server={"keep_alive_s": 0.5}))
    host, port = server.url.removeprefix("http://").split(":")
    for path in (b"/healthz", b"/api/chat/history"):
        stream = await trio.open_tcp_stream(host, int(port))
        try:
            await stream.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await _read_one_response(stream)).startswith(b"HTTP/1.1 200")
            await stream.send_eof()  # the client is done: the server sees end of file
            with trio.fail_after(GUARD_S):
                assert await stream.receive_some(65536) == b""  # ...and closes its side
        finally:
            await stream.aclose()
