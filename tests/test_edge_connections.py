"""The HTTP edge's connections under attack, over raw sockets: closed when the client asks,
smuggling refused, oversized and stalled bodies refused and closed, what Hypercorn answers
before the app (issue 11, findings 2 and 7).

Every request is written by hand and sent on a Trio socket, because the attacks are what an
HTTP client library will not send. POST /api/chat runs through both doors: the ASGI fast path
and the Quart view (``fast_chat`` off).
"""

from __future__ import annotations

import json

import pytest
import trio

from .conftest import RunningServer, StartServer, make_settings
from .doors import use_fast_path
from .raw_client import (
    ConnectionLeftOpen,
    exchange,
    open_stream,
    parse_responses,
    read_until_closed,
    request_bytes,
)

CHAT_BODY = json.dumps({"prompt": "hi"}).encode()
JOB_BODY = json.dumps({"message": "hi"}).encode()

# (label, method, path, body, fast path on?)
ROUTES = [
    ("healthz", "GET", "/healthz", b"", True),
    ("history", "GET", "/api/chat/history", b"", True),
    ("not found", "GET", "/nope", b"", True),
    ("delete session", "DELETE", "/api/chat", b"", True),
    ("job", "POST", "/chat", JOB_BODY, True),
    ("chat, fast path", "POST", "/api/chat", CHAT_BODY, True),
    ("chat, quart view", "POST", "/api/chat", CHAT_BODY, False),
]
ROUTE_IDS = [route[0] for route in ROUTES]


@pytest.mark.parametrize(("label", "method", "path", "body", "fast"), ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("ending", ["HTTP/1.0", "Connection: close"])
async def test_the_connection_is_closed_after_the_reply_when_the_client_asks(
    server: RunningServer, label: str, method: str, path: str, body: bytes, fast: bool,
    ending: str,
) -> None:
    use_fast_path(server, fast)
    if ending == "HTTP/1.0":
        raw = request_bytes(method, path, version="1.0", body=body)
    else:
        raw = request_bytes(method, path, headers=[("Connection", "close")], body=body)
    (response,) = parse_responses(await exchange(server.url, raw))
    assert response.status in (200, 202, 204, 404)


async def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_timeout(
    simulator_url: str,
) -> None:
    """Hypercorn's keep-alive timer restarts after each reply; a cancelled close left it off."""
    from functools import partial

    from hypercorn.trio import serve

    from web.api.app import create_app
    from web.api.server import hypercorn_config

    config = hypercorn_config("127.0.0.1:0", 1)
    config.keep_alive_timeout = 0.2
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(partial(serve, create_app(make_settings(simulator_url)),
                                             config))
        stream = await open_stream(url)
        try:
            await stream.send_all(request_bytes("GET", "/healthz"))
            (response,) = parse_responses(await read_until_closed(stream))
        finally:
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert response.status == 200


async def test_thousands_of_http10_clients_that_keep_their_sockets_do_not_pile_up(
    server: RunningServer,
) -> None:
    """The repro of finding 2, scaled down: each HTTP/1.0 client gets its answer and EOF."""
    closed = 0

    async def one_client() -> None:
        nonlocal closed
        (response,) = parse_responses(
            await exchange(server.url, request_bytes("GET", "/healthz", version="1.0"))
        )
        assert response.status == 200
        closed += 1

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(one_client)
    assert closed == 200


SMUGGLED = request_bytes("GET", "/debug/actors")


@pytest.mark.parametrize(("label", "method", "path", "body", "fast"), ROUTES, ids=ROUTE_IDS)
async def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    server: RunningServer, label: str, method: str, path: str, body: bytes, fast: bool,
) -> None:
    use_fast_path(server, fast)
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    raw = request_bytes(
        method, path,
        headers=[("Content-Length", str(len(chunked))), ("Transfer-Encoding", "chunked")],
        body=chunked,
    ) + SMUGGLED
    responses = parse_responses(await exchange(server.url, raw))
    assert len(responses) == 1, "the bytes after the body ran as a second request"
    (response,) = responses
    assert response.status == 400
    assert response.header("content-type") == "application/json"
    assert response.header("connection") == "close"
    error = json.loads(response.body)["error"]
    assert error["type"] == "invalid_request"
    assert "Transfer-Encoding" in error["message"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "quart view"])
async def test_a_body_over_the_limit_is_413_and_the_connection_closes_while_the_client_sends(
    start_server: StartServer, simulator_url: str, fast: bool,
) -> None:
    server = await start_server(make_settings(simulator_url, server={"max_body_bytes": 1000}))
    use_fast_path(server, fast)
    stream = await open_stream(server.url)
    try:
        await stream.send_all(request_bytes(
            "POST", "/api/chat", headers=[("Content-Length", str(4 * 2**20))]
        ))
        with trio.move_on_after(2):  # fill the server's queues; the server may stop reading
            for _ in range(64):
                await stream.send_all(b"x" * 65536)
        (response,) = parse_responses(await read_until_closed(stream))
    except trio.BrokenResourceError:  # closed while we were still sending: fine
        return
    finally:
        await stream.aclose()
    assert response.status == 413
    assert json.loads(response.body)["error"]["type"] == "payload_too_large"


async def test_requests_hypercorn_refuses_before_the_app_are_answered_and_closed(
    server: RunningServer,
) -> None:
    """Documented in the README: these never reach the app, so their bodies are empty."""
    for raw in (b"NOT HTTP AT ALL\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"):
        try:
            data = await exchange(server.url, raw)
        except (ConnectionLeftOpen, trio.BrokenResourceError) as error:  # pragma: no cover
            raise AssertionError("Hypercorn should answer and close") from error
        (response,) = parse_responses(data)
        assert response.status in (400, 431)
        assert response.body == b""



@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "quart view"])
async def test_a_body_that_stalls_is_408_json_on_both_doors(
    server: RunningServer, fast: bool,
) -> None:
    use_fast_path(server, fast)
    server.app.config["BODY_TIMEOUT"] = 0.2
    stream = await open_stream(server.url)
    try:
        await stream.send_all(request_bytes(
            "POST", "/api/chat", headers=[("Content-Length", "100")]
        ) + b'{"prompt": ')
        (response,) = parse_responses(await read_until_closed(stream))
    finally:
        await stream.aclose()
    assert response.status == 408
    assert json.loads(response.body)["error"] == {
        "type": "request_timeout", "message": "the request body did not arrive in time",
    }
