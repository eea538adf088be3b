"""What the HTTP edge answers and records: deep JSON refused without a traceback, clean access
logs, JSON for every error and redirect, the two doors to POST /api/chat alike, one count per
request (issue 11, findings 4, 5, 8; issue 8, one stack per route).
"""

from __future__ import annotations

import json
import logging

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from .conftest import RunningServer, StartServer, make_settings
from .doors import use_fast_path
from .held_simulator import open_held_simulator
from .raw_client import RawResponse, exchange, open_stream, parse_responses, request_bytes

CHAT_BODY = json.dumps({"prompt": "hi"}).encode()


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
DEEP_FIELD = b'{"prompt": "hi", "message": "hi", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.mark.parametrize(
    ("path", "fast"),
    [("/api/chat", True), ("/api/chat", False), ("/chat", True)],
    ids=["chat, fast path", "chat, quart view", "job"],
)
@pytest.mark.parametrize("body", [DEEP_JSON, DEEP_FIELD], ids=["deep array", "deep field"])
async def test_deeply_nested_json_is_a_400_with_no_traceback(
    server: RunningServer, caplog: pytest.LogCaptureFixture, path: str, fast: bool, body: bytes,
) -> None:
    use_fast_path(server, fast)
    caplog.set_level(logging.INFO)
    async with server.client() as client:
        response = await client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"
    assert "nested" in response.json()["error"]["message"]
    assert not [record for record in caplog.records if record.exc_info]
    assert "RecursionError" not in caplog.text


FORGED_PATH = "/x%0d%0aINJECTED%20LOG%20LINE%1b[31m"


async def test_control_characters_from_a_request_are_escaped_in_the_access_log(
    start_server: StartServer, simulator_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="actorchat.access")
    server = await start_server(make_settings(simulator_url, server={"access_log": True}))
    (response,) = parse_responses(await exchange(
        server.url, request_bytes("GET", FORGED_PATH, headers=[("Connection", "close")])
    ))
    assert response.status == 404
    (line,) = [record.getMessage() for record in caplog.records
               if record.name == "actorchat.access"]
    assert not {"\r", "\n", "\x1b"} & set(line)
    assert line.startswith("GET /x\\r\\nINJECTED LOG LINE\\x1b[31m 404 ")


def test_the_log_format_escapes_control_characters_in_every_message() -> None:
    from web.api.logs import LogFormatter

    formatter = LogFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "actorchat.web", logging.WARNING, __file__, 1, "bad key %r then %s", ("a\nb", "c\rd\x00"),
        None,
    )
    line = formatter.format(record)
    assert line == "WARNING bad key 'a\\nb' then c\\rd\\x00"
    assert "\n" not in formatter.format(logging.LogRecord(
        "x", logging.INFO, __file__, 1, "one\u2028two\x85three", None, None
    ))


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/api//chat", 404),
        ("GET", "/healthz/", 404),
        ("GET", "/api/chat/history/", 404),
        ("PUT", "/api/chat", 405),
        ("PATCH", "/chat", 405),
        ("GET", "/static/x", 404),
    ],
)
async def test_every_error_and_redirect_the_app_sees_is_json(
    server: RunningServer, method: str, path: str, status: int,
) -> None:
    body = CHAT_BODY if method in ("POST", "PUT", "PATCH") else b""
    (response,) = parse_responses(await exchange(
        server.url, request_bytes(method, path, headers=[("Connection", "close")], body=body)
    ))
    assert response.status == status
    assert response.header("content-type") == "application/json"
    assert response.header("location") is None
    error = json.loads(response.body)["error"]
    assert error["type"]
    assert error["message"]
    if status == 405:
        assert response.header("allow")


async def test_any_werkzeug_http_exception_and_routing_redirect_is_json() -> None:
    """Routes the app does not have today: a view raising a werkzeug HTTPException, and a
    rule ending in "/" (werkzeug redirects "/kettle" there, with an HTML body of its own)."""
    from werkzeug.exceptions import ImATeapot

    from web.api.app import create_app

    app = create_app(make_settings(None))

    @app.get("/teapot")
    async def teapot() -> None:
        raise ImATeapot()

    @app.get("/kettle/")
    async def kettle() -> str:
        return "{}"

    client = app.test_client()
    response = await client.get("/teapot")
    assert response.status_code == 418
    assert response.headers["content-type"] == "application/json"
    assert (await response.get_json())["error"]["message"]
    moved = await client.get("/kettle")
    assert moved.status_code == 308
    assert moved.headers["content-type"] == "application/json"
    assert moved.headers["location"].endswith("/kettle/")
    assert (await moved.get_json())["error"]["type"] == "moved"


def _comparable(response: RawResponse) -> tuple[int, list[str], object]:
    """Status, header names (without the per-request ones) and the JSON body minus timings."""
    varying = {"date", "set-cookie", "server-timing"}
    names = sorted(name for name, _ in response.headers if name not in varying)
    return response.status, names, json.loads(response.body) if response.body else None


@pytest.mark.parametrize(
    "body",
    [CHAT_BODY, b'{"prompt": ""}', b"not json", b'{"prompt": "' + b"x" * 2000 + b'"}'],
    ids=["turn", "empty prompt", "not json", "too large"],
)
async def test_the_fast_path_and_the_quart_view_answer_alike_header_for_header(
    start_server: StartServer, simulator_url: str, body: bytes,
) -> None:
    server = await start_server(make_settings(simulator_url, server={"max_body_bytes": 1000}))
    answers = []
    for fast in (True, False):
        use_fast_path(server, fast)
        raw = request_bytes("POST", "/api/chat", headers=[("Connection", "close")], body=body)
        (response,) = parse_responses(await exchange(server.url, raw))
        answers.append(response)
    fast_answer, view_answer = answers
    assert _comparable(fast_answer) == _comparable(view_answer)
    assert (fast_answer.header("set-cookie") is None) == (view_answer.header("set-cookie") is None)
    assert (fast_answer.header("server-timing") is None) == (
        view_answer.header("server-timing") is None
    )


def test_no_quart_hook_applies_to_post_api_chat_but_the_edges_own() -> None:
    """The fast path skips Quart's hooks, so none may apply to its route but the edge's own
    (which notes the URL rule; the fast path knows its rule) and the JSON redirect (its route
    never redirects). A new app-wide or sessions-blueprint hook must go into the edge instead,
    or the fast path must go."""
    from web.api.app import create_app

    app = create_app(make_settings(None, server={"access_log": True}))
    assert [hook.__name__ for hook in app.before_request_funcs.get(None, [])] == ["_note_route"]
    assert not app.before_request_funcs.get("sessions")
    assert [hook.__name__ for hook in app.after_request_funcs.get(None, [])] == [
        "_json_redirect"
    ]
    assert not app.after_request_funcs.get("sessions")
    assert not app.teardown_request_funcs
    assert not app.url_value_preprocessors


async def test_every_request_is_counted_once_with_its_route_whichever_door_answered(
    server: RunningServer,
) -> None:
    """The edge counts; Quart's hooks no longer do. A client that leaves is status 499."""
    async with server.client() as client:
        for fast in (True, False):
            use_fast_path(server, fast)
            assert (await client.post("/api/chat", json={"prompt": "hi"})).status_code == 200
        await client.get(f"/chat/{'0' * 8}-0000-0000-0000-{'0' * 12}/response")
        await client.get("/nope")
        text = (await client.get("/metrics")).text
    assert 'actorchat_http_requests_total{method="POST",route="/api/chat",status="200"} 2.0' \
        in text
    assert ('actorchat_http_requests_total{method="GET",route="/chat/<trace_id>/response",'
            'status="404"} 1.0') in text
    assert 'actorchat_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' \
        in text


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "quart view"])
async def test_a_turn_whose_client_left_is_counted_as_status_499(
    start_server: StartServer, fast: bool,
) -> None:
    async with open_held_simulator() as upstream:
        server = await start_server(make_settings(upstream.url))
        use_fast_path(server, fast)
        stream = await open_stream(server.url)
        await stream.send_all(request_bytes("POST", "/api/chat", body=CHAT_BODY))
        with trio.fail_after(10):
            await upstream.wait_until(lambda held: held.held == 1)
        await stream.aclose()
        await wait_all_tasks_blocked()  # the server has seen the client go
        async with server.client() as client:
            text = (await client.get("/metrics")).text
        upstream.release()
    assert 'actorchat_http_requests_total{method="POST",route="/api/chat",status="499"} 1.0' \
        in text

