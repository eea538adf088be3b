"""`TrioHTTP11Transport` when things go wrong: closed, cut, silent and refused connections,
timeouts, cancellation, TLS certificates.

Every server is a raw ``trio.serve_tcp`` handler (`tests.raw_http`) and the client is the
official SDK, whose errors (``APIConnectionError`` etc.) are the point. Timeouts run on the
``mock_clock`` fixture (a MockClock that only moves when the test jumps it, after
`wait_all_tasks_blocked`), never on the real clock.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from functools import partial
from pathlib import Path

import httpx2
import openai
import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from actors.errors import UpstreamCertificateError
from actors.upstream import ChatRequest, OpenAIUpstream
from actors.upstream.transport import TrioHTTP11Transport
from tests.raw_http import (
    COMPLETION,
    MESSAGES,
    Requests,
    Server,
    StartServer,
    chat,
    keep_alive,
    reset,
    response,
    sdk,
    start_raw_server,
)


@pytest.fixture
def start_server(nursery: trio.Nursery) -> StartServer:
    return partial(start_raw_server, nursery)


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_an_idle_connection_closed_by_the_server_is_retried(
    start_server: StartServer, how: str
) -> None:
    async def one_then_close(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        await stream.send_all(response())  # keep-alive, as far as the client knows
        if how == "rst":
            reset(stream)

    server = await start_server(one_then_close)
    transport = TrioHTTP11Transport()
    async with sdk(server.url, transport) as client:
        assert await chat(client) == "hi there"
        assert transport.idle_connections == 1
        await server.closed.wait()  # the server's close arrives while the connection is idle
        assert await chat(client) == "hi there"
    assert server.connections == 2


async def test_a_new_connection_closed_before_answering_is_not_retried(
    start_server: StartServer,
) -> None:
    async def close_at_once(stream: trio.SocketStream) -> None:
        await Requests(stream).next()

    server = await start_server(close_at_once)
    async with sdk(server.url, TrioHTTP11Transport()) as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await chat(client)
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
    assert server.connections == 1


@pytest.mark.parametrize(("how", "error"), [
    ("rst", httpx2.ReadError), ("fin", httpx2.RemoteProtocolError),
])
async def test_a_connection_cut_mid_body_is_a_connection_error(
    start_server: StartServer, how: str, error: type[Exception]
) -> None:
    async def cut(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        await stream.send_all(response()[:-20])
        await trio.sleep(0.05)
        if how == "rst":
            reset(stream)

    server = await start_server(cut)
    transport = TrioHTTP11Transport()
    async with sdk(server.url, transport) as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await chat(client)
        assert not isinstance(caught.value, openai.APITimeoutError)
        assert isinstance(caught.value.__cause__, error)
        assert transport.idle_connections == 0
    assert server.connections == 1  # a response was under way: not retried


async def test_a_server_that_never_answers_times_out(
    start_server: StartServer, mock_clock: MockClock
) -> None:
    received = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        await Requests(stream).next()
        received.set()
        await trio.sleep_forever()

    server = await start_server(silent)
    transport = TrioHTTP11Transport()
    failures: list[BaseException] = []
    async with sdk(server.url, transport, timeout=10) as client:

        async def call() -> None:
            try:
                await chat(client)
            except openai.APITimeoutError as error:
                failures.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await received.wait()
            await wait_all_tasks_blocked()
            mock_clock.jump(9.9)
            await wait_all_tasks_blocked()
            assert not failures  # still within the read timeout
            mock_clock.jump(0.2)
        assert isinstance(failures[0].__cause__, httpx2.ReadTimeout)
        assert transport.idle_connections == 0


async def test_the_read_timeout_is_per_read(
    start_server: StartServer, mock_clock: MockClock
) -> None:
    send_piece, next_piece = trio.open_memory_channel[None](10)

    async def trickle(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        while await requests.next() is not None:
            wire = response()
            size = len(wire) // 4 + 1
            for offset in range(0, len(wire), size):
                await next_piece.receive()
                await stream.send_all(wire[offset:offset + size])

    async def pause_then_send_a_piece() -> None:
        await wait_all_tasks_blocked()
        mock_clock.jump(0.1)
        send_piece.send_nowait(None)

    server = await start_server(trickle)
    transport = TrioHTTP11Transport()
    answers: list[httpx2.Response | Exception] = []
    async with httpx2.AsyncClient(transport=transport) as client:

        async def get(read_timeout: float) -> None:
            try:
                answers.append(
                    await client.get(server.url, timeout=httpx2.Timeout(None, read=read_timeout))
                )
            except httpx2.ReadTimeout as error:
                answers.append(error)

        async with trio.open_nursery() as nursery:
            # 0.4 s in all, never more than 0.1 s without bytes: within a 0.25 s read timeout.
            nursery.start_soon(get, 0.25)
            for _ in range(4):
                await pause_then_send_a_piece()
        assert isinstance(answers[0], httpx2.Response)
        assert answers[0].content == COMPLETION
        async with trio.open_nursery() as nursery:
            nursery.start_soon(get, 0.05)
            await pause_then_send_a_piece()
        assert isinstance(answers[1], httpx2.ReadTimeout)
        assert transport.idle_connections == 0


async def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, with no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with sdk(f"http://127.0.0.1:{port}/v1", TrioHTTP11Transport()) as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await chat(client)
    assert isinstance(caught.value.__cause__, httpx2.ConnectError)


async def test_cancelling_a_call_closes_its_connection(start_server: StartServer) -> None:
    received = trio.Event()
    closed = trio.Event()

    async def slow(stream: trio.SocketStream) -> None:
        requests = Requests(stream)
        await requests.next()
        await stream.send_all(response())  # the first call completes
        await requests.next()
        received.set()  # the second call is in flight: never answered
        if await requests.next() is None:
            closed.set()

    server = await start_server(slow)
    transport = TrioHTTP11Transport()
    async with sdk(server.url, transport) as client:
        assert await chat(client) == "hi there"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat, client)
            await received.wait()
            assert transport.idle_connections == 0
            nursery.cancel_scope.cancel()
        assert transport.idle_connections == 0
        assert transport.active_connections == 0
        with trio.fail_after(1):
            await closed.wait()  # the server saw the connection close
        assert await chat(client) == "hi there"  # and the pool still works
    assert server.connections == 2


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=test",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


async def serve_tls(nursery: trio.Nursery, certificate: tuple[Path, Path]) -> tuple[Server, str]:
    """A keep-alive server over TLS with ``certificate``; its https base URL."""
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = Server(keep_alive)
    listeners = await nursery.start(partial(
        trio.serve_ssl_over_tcp, server.serve, 0, server_context, host="127.0.0.1",
        https_compatible=True,
    ))
    port = listeners[0].transport_listener.socket.getsockname()[1]
    return server, f"https://127.0.0.1:{port}/v1"


async def test_https_with_certificate_checks(
    nursery: trio.Nursery, certificate: tuple[Path, Path]
) -> None:
    server, url = await serve_tls(nursery, certificate)
    trusting = TrioHTTP11Transport(ssl_context=ssl.create_default_context(cafile=certificate[0]))
    async with sdk(url, trusting) as client:
        assert await chat(client) == "hi there"
        assert await chat(client) == "hi there"
    assert server.connections == 1

    async with sdk(url, TrioHTTP11Transport()) as client:  # the default CAs: refused
        with pytest.raises(openai.APIConnectionError) as caught:
            await chat(client)
    assert isinstance(caught.value.__cause__, httpx2.ConnectError)
    assert isinstance(caught.value.__cause__.__cause__, ssl.SSLCertVerificationError)


async def test_a_certificate_failing_verification_is_reported_as_such_and_not_transient(
    nursery: trio.Nursery, certificate: tuple[Path, Path]
) -> None:
    server, url = await serve_tls(nursery, certificate)
    upstream = OpenAIUpstream(api_key="test-key", base_url=url, timeout_s=5)
    try:
        with pytest.raises(UpstreamCertificateError) as caught:
            await upstream.complete(ChatRequest(MESSAGES, "test-model", 0.5))
    finally:
        await upstream.aclose()
    error = caught.value
    assert error.transient is False  # the retrying caller gives up at once
    assert error.type == "upstream_tls_error"
    assert "TLS certificate failed verification" in error.message
    assert "SSL_CERT_FILE" in error.message
    assert server.connections == 1
