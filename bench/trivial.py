"""The cheapest HTTP/1.1 server we can write: measures how fast the load tester itself is.

``python bench/trivial.py PORT`` answers every request on 127.0.0.1:PORT with the same small
JSON body and a ``Server-Timing`` header, on keep-alive connections. It parses only the
request head and ``Content-Length``: enough for the load tester, nothing more.
"""

from __future__ import annotations

import sys

import trio

_BODY = b'{"response": "ok", "model": "trivial", "usage": null}'
_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"server-timing: upstream;dur=0.0, gate;dur=0.0, mailbox;dur=0.0, app;dur=0.0\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


async def _answer(stream: trio.SocketStream) -> None:
    buffer = bytearray()
    try:
        while data := await stream.receive_some(65536):
            buffer += data
            while (end := buffer.find(b"\r\n\r\n")) >= 0:
                length = 0
                for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(buffer) < end + 4 + length:
                    break
                del buffer[: end + 4 + length]
                await stream.send_all(_REPLY)
    except (trio.BrokenResourceError, ValueError):
        pass


async def main(port: int) -> None:
    await trio.serve_tcp(_answer, port, host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
