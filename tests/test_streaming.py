"""`OpenAIUpstream.stream` against raw servers that stream OpenAI's server-sent events.

Each server writes the head and chunked body by hand, as OpenAI frames its
``chat.completion.chunk`` events, so that every failure (a cut, an error event, a hang) can
be placed exactly. Time runs on the ``mock_clock`` fixture, moved only by the test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from actors.errors import (
    UpstreamRateLimited,
    UpstreamRefusedKey,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from actors.upstream import (
    ChatRequest,
    Completion,
    Delta,
    Head,
    OpenAIUpstream,
    RateLimitInfo,
    StreamEvent,
)
from actors.upstream.transport import TrioHTTP11Transport
from tests.raw_http import Requests, StartServer, reset, response, start_raw_server

KEY = "sk-secret-test-key"
REQUEST = ChatRequest([{"role": "user", "content": "hello"}], "test-model", 0.5)
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    b"x-ratelimit-limit-requests: 100\r\nx-ratelimit-remaining-requests: 99\r\n\r\n"
)
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def event(data: Any) -> bytes:
    """One server-sent event as one HTTP chunk."""
    payload = b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode())
    payload += b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def chunk(text: str | None = None, *, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {"role": "assistant"}
    return event({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })


USAGE_CHUNK = event({
    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
    "model": "test-model", "choices": [], "usage": USAGE,
})
DONE = event(b"[DONE]")
END = b"0\r\n\r\n"
WHOLE_STREAM = (
    HEAD + chunk() + chunk("Hel") + chunk("lo") + chunk(" world") + chunk(finish="stop")
    + USAGE_CHUNK + DONE + END
)


@pytest.fixture
def start_server(nursery: trio.Nursery) -> StartServer:
    return partial(start_raw_server, nursery)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], OpenAIUpstream]]:
    """Make `OpenAIUpstream` clients for a server's URL; all are closed at teardown."""
    made: list[OpenAIUpstream] = []

    def make(url: str) -> OpenAIUpstream:
        made.append(OpenAIUpstream(api_key=KEY, base_url=url, timeout_s=10))
        return made[-1]

    try:
        yield make
    finally:
        for upstream in made:
            await upstream.aclose()


def transport_of(upstream: OpenAIUpstream) -> TrioHTTP11Transport:
    transport = upstream._http._transport
    assert isinstance(transport, TrioHTTP11Transport)
    return transport


async def test_a_stream_yields_its_deltas_then_the_whole_answer(
    start_server: StartServer, connect: Callable[[str], OpenAIUpstream]
) -> None:
    bodies: list[dict[str, Any]] = []

    async def streaming(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        while (request := await requests.next()) is not None:
            bodies.append(json.loads(request[1]))
            for offset in range(0, len(WHOLE_STREAM), 7):  # split anywhere
                await stream.send_all(WHOLE_STREAM[offset:offset + 7])

    server = await start_server(streaming)
    upstream = connect(server.url)
    for _ in range(2):
        async with upstream.stream(REQUEST) as events:
            received = [event async for event in events]
        assert received == [
            Head(RateLimitInfo(100, 99)), Delta("Hel"), Delta("lo"), Delta(" world"),
            Completion("Hello world", "test-model", USAGE, RateLimitInfo(100, 99)),
        ]
    assert bodies[0]["stream"] is True
    assert bodies[0]["stream_options"] == {"include_usage": True}
    assert bodies[0]["messages"] == [{"role": "user", "content": "hello"}]
    assert server.connections == 1  # a whole stream gives its connection back to the pool
    assert transport_of(upstream).idle_connections == 1


async def test_deltas_arrive_while_the_upstream_is_still_writing(
    start_server: StartServer, connect: Callable[[str], OpenAIUpstream]
) -> None:
    first_sent, rest_allowed = trio.Event(), trio.Event()

    async def slow(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        await stream.send_all(HEAD + chunk("first"))
        first_sent.set()
        await rest_allowed.wait()
        await stream.send_all(chunk(" second", finish="stop") + DONE + END)

    upstream = connect((await start_server(slow)).url)
    received: list[StreamEvent] = []

    async def consume() -> None:
        async with upstream.stream(REQUEST) as events:
            async for event in events:
                received.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await first_sent.wait()
        await wait_all_tasks_blocked()
        # before the server wrote the rest
        assert received == [Head(RateLimitInfo(100, 99)), Delta("first")]
        rest_allowed.set()
    assert received[2] == Delta(" second")
    assert isinstance(received[3], Completion)
    assert received[3].content == "first second"


@pytest.mark.parametrize(("status", "error"), [
    (b"429 Too Many Requests", UpstreamRateLimited),
    (b"401 Unauthorized", UpstreamRefusedKey),
    (b"503 Service Unavailable", UpstreamUnavailable),
])
async def test_an_error_status_is_raised_on_entering_before_any_event(
    start_server: StartServer, connect: Callable[[str], OpenAIUpstream], status: bytes,
    error: type[Exception],
) -> None:
    async def refuse(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        while await requests.next() is not None:
            body = b'{"error": {"message": "no", "type": "x"}}'
            await stream.send_all(response(body, status=status, extra=b"retry-after: 2\r\n"))

    upstream = connect((await start_server(refuse)).url)
    entered = False
    with pytest.raises(error) as caught:
        async with upstream.stream(REQUEST):
            entered = True
    assert not entered
    if isinstance(caught.value, UpstreamRateLimited):
        assert caught.value.retry_after == 2.0
    assert transport_of(upstream).idle_connections == 1  # the error body was read whole


async def test_a_connection_cut_mid_stream_is_an_upstream_error(
    start_server: StartServer, connect: Callable[[str], OpenAIUpstream]
) -> None:
    async def cut(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        await stream.send_all(HEAD + chunk("partial"))
        reset(stream)

    upstream = connect((await start_server(cut)).url)
    received = []

    async def consume() -> None:
        async with upstream.stream(REQUEST) as events:
            async for event in events:
                received.append(event)

    with pytest.raises(UpstreamUnavailable):
        await consume()
    assert received[1:] == [Delta("partial")]
    assert transport_of(upstream).active_connections == 0
    assert transport_of(upstream).idle_connections == 0


@pytest.mark.parametrize("wire", [
    chunk("partial") + END,  # the body ends: no finish_reason, no [DONE]
    chunk("partial") + event({"error": {"message": f"overloaded, key {KEY}"}}),
    chunk("partial") + event(b"{not json"),
])
async def test_a_stream_that_fails_mid_way_raises_an_upstream_error_without_the_key(
    start_server: StartServer, connect: Callable[[str], OpenAIUpstream], wire: bytes
) -> None:
    async def failing(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        await stream.send_all(HEAD + wire)
        await trio.sleep_forever()

    upstream = connect((await start_server(failing)).url)
    async def consume() -> None:
        async with upstream.stream(REQUEST) as events:
            async for _ in events:
                pass

    with pytest.raises(UpstreamUnavailable) as caught:
        await consume()
    assert KEY not in caught.value.message
    assert transport_of(upstream).active_connections == 0


async def test_an_upstream_silent_mid_stream_times_out(
    start_server: StartServer, connect: Callable[[str], OpenAIUpstream], mock_clock: MockClock
) -> None:
    sent = trio.Event()

    async def stalls(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        await stream.send_all(HEAD + chunk("partial"))
        sent.set()
        await trio.sleep_forever()

    upstream = connect((await start_server(stalls)).url)  # timeout_s=10
    failures: list[Exception] = []

    async def consume() -> None:
        try:
            async with upstream.stream(REQUEST) as events:
                async for _ in events:
                    pass
        except UpstreamTimeout as error:
            failures.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await sent.wait()
        await wait_all_tasks_blocked()
        mock_clock.jump(9.9)
        await wait_all_tasks_blocked()
        assert not failures
        mock_clock.jump(0.2)
    assert len(failures) == 1


@pytest.mark.parametrize("how", ["break", "cancel"])
async def test_leaving_a_stream_early_closes_its_connection_and_leaves_no_task(
    start_server: StartServer, connect: Callable[[str], OpenAIUpstream], how: str
) -> None:
    async def endless(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        await requests.next()
        await stream.send_all(HEAD + chunk("one"))
        assert await requests.next() is None  # nothing more until the client closes

    server = await start_server(endless)
    upstream = connect(server.url)
    await wait_all_tasks_blocked()
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    got_one = trio.Event()

    async def consume() -> None:
        async with upstream.stream(REQUEST) as events:
            async for event in events:
                if isinstance(event, Head):
                    continue
                assert event == Delta("one")
                got_one.set()
                if how == "break":
                    break

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await got_one.wait()
        if how == "cancel":
            nursery.cancel_scope.cancel()
    await server.closed.wait()  # the server saw the connection close
    await wait_all_tasks_blocked()
    transport = transport_of(upstream)
    assert (transport.active_connections, transport.idle_connections) == (0, 0)
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before
