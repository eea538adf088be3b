"""`TrioHTTP11Transport` against real servers on loopback ports: pooling, streaming, framing.

The happy path runs the official SDK against the simulator; odd servers (slow bodies, odd
framing) are raw ``trio.serve_tcp`` handlers (`tests.raw_http`). Failures are in
`tests.test_transport_failures`. Timeouts run on the ``mock_clock`` fixture (a MockClock that
only moves when the test jumps it, after `wait_all_tasks_blocked`), never on the real clock.
"""

from __future__ import annotations

import gzip
from contextlib import aclosing
from functools import partial

import httpx2
import openai
import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from actors.upstream import ChatRequest, OpenAIUpstream
from actors.upstream.transport import TrioHTTP11Transport
from tests.conftest import SIM_KEY, StartSimulator
from tests.raw_http import (
    COMPLETION,
    MESSAGES,
    Requests,
    StartServer,
    chat,
    keep_alive,
    response,
    sdk,
    start_raw_server,
)


@pytest.fixture
def start_server(nursery: trio.Nursery) -> StartServer:
    return partial(start_raw_server, nursery)


# -- the happy path -------------------------------------------------------------------------


async def test_sdk_call_through_the_simulator(start_simulator: StartSimulator) -> None:
    url = await start_simulator()
    transport = TrioHTTP11Transport(max_connections=4)
    async with sdk(url, transport) as client:
        client.api_key = SIM_KEY
        content = await chat(client)
        assert content is not None
        assert content.startswith("Simulated reply")
        assert transport.idle_connections == 1
        with pytest.raises(openai.NotFoundError):  # an error status comes through intact
            await client.models.retrieve("no-such-model")
    assert transport.idle_connections == 0  # closing the client closed the pool


async def test_upstream_uses_the_transport(start_simulator: StartSimulator) -> None:
    upstream = OpenAIUpstream(api_key=SIM_KEY, base_url=await start_simulator(), timeout_s=5)
    try:
        assert isinstance(upstream._http._transport, TrioHTTP11Transport)
        completion = await upstream.complete(ChatRequest(MESSAGES, "gpt-test", 0.5))
        assert completion.content.startswith("Simulated reply")
        assert completion.usage is not None
    finally:
        await upstream.aclose()


async def test_keep_alive_uses_one_connection(start_server: StartServer) -> None:
    server = await start_server(keep_alive)
    async with sdk(server.url, TrioHTTP11Transport()) as client:
        for _ in range(10):
            assert await chat(client) == "hi there"
    assert server.connections == 1


async def test_concurrent_calls_are_capped_at_max_connections(
    start_server: StartServer,
) -> None:
    async def slow(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        while await requests.next() is not None:
            await trio.sleep(0.05)
            await stream.send_all(response())

    server = await start_server(slow)
    transport = TrioHTTP11Transport(max_connections=3)
    answers = []
    async with sdk(server.url, transport) as client:

        async def call() -> None:
            answers.append(await chat(client))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(call)
        assert transport.idle_connections == 3
    assert answers == ["hi there"] * 10
    assert server.max_open == 3
    assert server.connections == 3


async def test_idle_connections_of_another_origin_make_room(start_server: StartServer) -> None:
    first, second = await start_server(keep_alive), await start_server(keep_alive)
    transport = TrioHTTP11Transport(max_connections=1)
    async with sdk(first.url, transport) as client_1, sdk(second.url, transport) as client_2:
        assert await chat(client_1) == "hi there"
        assert await chat(client_2) == "hi there"  # closes the idle connection to `first`
        assert transport.idle_connections == 1
        with trio.fail_after(1):
            await first.closed.wait()
        assert await chat(client_2) == "hi there"
    assert (first.connections, second.connections) == (1, 1)


async def test_waiting_for_a_connection_honours_the_pool_timeout(
    start_server: StartServer, mock_clock: MockClock
) -> None:
    received = trio.Event()

    async def hang(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        received.set()
        await trio.sleep_forever()

    server = await start_server(hang)
    transport = TrioHTTP11Transport(max_connections=1)
    waited: list[BaseException] = []
    async with httpx2.AsyncClient(transport=transport) as client:

        async def second_request() -> None:
            try:
                await client.get(server.url, timeout=httpx2.Timeout(None, pool=0.5))
            except httpx2.PoolTimeout as error:
                waited.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.get, server.url)  # holds the only connection
            await received.wait()
            nursery.start_soon(second_request)
            await wait_all_tasks_blocked()
            mock_clock.jump(0.49)
            await wait_all_tasks_blocked()
            assert not waited
            mock_clock.jump(0.02)
            await wait_all_tasks_blocked()
            assert len(waited) == 1
            nursery.cancel_scope.cancel()
    assert server.connections == 1


# -- streaming bodies -----------------------------------------------------------------------


async def test_a_body_streams_and_holds_its_connection_until_it_ends(
    start_server: StartServer,
) -> None:
    first_sent, rest_allowed = trio.Event(), trio.Event()

    async def slow(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        while await requests.next() is not None:
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"
            )
            first_sent.set()
            await rest_allowed.wait()
            await stream.send_all(b"4\r\nlast\r\n0\r\n\r\n")

    server = await start_server(slow)
    transport = TrioHTTP11Transport()
    pieces: list[bytes] = []
    async with httpx2.AsyncClient(transport=transport) as client:

        async def get() -> None:
            async with client.stream("GET", server.url) as answer:
                async for piece in answer.aiter_raw():
                    pieces.append(piece)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get)
            await first_sent.wait()
            await wait_all_tasks_blocked()
            assert pieces == [b"first"]  # before the server wrote the rest
            assert (transport.active_connections, transport.idle_connections) == (1, 0)
            rest_allowed.set()
        assert pieces == [b"first", b"last"]
        assert (transport.active_connections, transport.idle_connections) == (0, 1)
    assert server.connections == 1


async def test_a_body_closed_before_its_end_closes_its_connection(
    start_server: StartServer,
) -> None:
    async def endless(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        await requests.next()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst")
        assert await requests.next() is None  # the client closed the connection

    server = await start_server(endless)
    transport = TrioHTTP11Transport()
    async with httpx2.AsyncClient(transport=transport) as client:
        async with client.stream("GET", server.url) as answer:
            async with aclosing(answer.aiter_raw()) as pieces:
                assert await pieces.__anext__() == b"first"
        assert (transport.active_connections, transport.idle_connections) == (0, 0)
        await server.closed.wait()


# -- response framing -----------------------------------------------------------------------


async def test_chunked_body(start_server: StartServer) -> None:
    async def chunked(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        while await requests.next() is not None:
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            pieces = [COMPLETION[:10], COMPLETION[10:11], COMPLETION[11:]]
            wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
            wire += b"0\r\nx-trailer: yes\r\n\r\n"
            for offset in range(0, len(wire), 7):  # in small pieces, split anywhere
                await stream.send_all(wire[offset:offset + 7])
                await trio.lowlevel.checkpoint()

    server = await start_server(chunked)
    async with sdk(server.url, TrioHTTP11Transport()) as client:
        assert await chat(client) == "hi there"
        assert await chat(client) == "hi there"
    assert server.connections == 1  # a complete chunked body keeps the connection


async def test_gzip_body_is_decoded(start_server: StartServer) -> None:
    async def gzipped(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        body = gzip.compress(COMPLETION)
        await stream.send_all(response(body, extra=b"content-encoding: gzip\r\n"))

    server = await start_server(gzipped)
    async with sdk(server.url, TrioHTTP11Transport()) as client:
        assert await chat(client) == "hi there"


async def test_connection_close_is_not_reused(start_server: StartServer) -> None:
    calls_done = trio.Event()

    async def once(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        await stream.send_all(response(extra=b"Connection: close\r\n"))
        await calls_done.wait()  # open until the end: the client must not wait for the close

    server = await start_server(once)
    transport = TrioHTTP11Transport()
    async with sdk(server.url, transport) as client:
        assert await chat(client) == "hi there"
        assert transport.idle_connections == 0
        assert await chat(client) == "hi there"
        calls_done.set()
    assert server.connections == 2


async def test_body_until_close_and_interim_responses(start_server: StartServer) -> None:
    async def old_style(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        await stream.send_all(b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n")
        await stream.send_all(COMPLETION)

    server = await start_server(old_style)
    transport = TrioHTTP11Transport()
    async with sdk(server.url, transport) as client:
        assert await chat(client) == "hi there"
        assert transport.idle_connections == 0


async def test_http_1_0_responses_are_not_reused(start_server: StartServer) -> None:
    async def http_1_0(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        while await requests.next() is not None:
            await stream.send_all(response().replace(b"HTTP/1.1", b"HTTP/1.0", 1))

    server = await start_server(http_1_0)
    async with sdk(server.url, TrioHTTP11Transport()) as client:
        assert await chat(client) == "hi there"
        assert await chat(client) == "hi there"
    assert server.connections == 2


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
    ],
)
async def test_malformed_responses_are_protocol_errors(
    start_server: StartServer, wire: bytes
) -> None:
    async def malformed(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        await stream.send_all(wire)
        await trio.sleep_forever()  # the error is in the bytes, not in a close

    server = await start_server(malformed)
    transport = TrioHTTP11Transport()
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.get(server.url)
    assert transport.idle_connections == 0


async def test_head_and_no_content_responses_have_no_body(start_server: StartServer) -> None:
    async def bodiless(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        while (request := await requests.next()) is not None:
            if request[0].startswith(b"HEAD"):
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
            else:
                await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")

    server = await start_server(bodiless)
    async with httpx2.AsyncClient(transport=TrioHTTP11Transport()) as client:
        head = await client.head(server.url)
        assert (head.status_code, head.content, head.headers["content-length"]) == (
            200, b"", "1234",
        )
        empty = await client.delete(server.url)
        assert (empty.status_code, empty.content) == (204, b"")
        assert empty.reason_phrase == "No Content"
        assert empty.elapsed.total_seconds() >= 0
    assert server.connections == 1


async def test_a_line_break_in_a_header_is_refused() -> None:
    transport = TrioHTTP11Transport()
    request = httpx2.Request("GET", "http://127.0.0.1:9/", headers={"x-a": "1\r\nx-b: 2"})
    with pytest.raises(httpx2.LocalProtocolError):
        await transport.handle_async_request(request)
