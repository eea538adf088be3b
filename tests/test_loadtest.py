"""The load tester over real HTTP: against the server, and against tiny fake servers that fail."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from web.cli import build_parser
from web.loadtest import LoadOptions, history_problem, run_loadtest
from web.loadtest.report import parse_server_timing

from .conftest import RunningServer

Scope = dict[str, Any]
App = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
               Awaitable[None]]


def run_command(argv: list[str]) -> int:
    """``actorchat ARGV`` as the CLI parses it, without ``main``'s logging and ``.env`` setup."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def options(url: str, **values: Any) -> LoadOptions:
    values.setdefault("progress", False)
    values.setdefault("timeout_s", 10)
    return LoadOptions(url=url, **values)


async def serve_fake(nursery: trio.Nursery, http_app: App) -> str:
    """Serve a raw ASGI app (HTTP only) on a free port until the test's nursery is cancelled."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await http_app(scope, receive, send)
            return
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(partial(hypercorn.trio.serve, app, config, mode="asgi"))
    return binds[0]


async def read_body(receive: Callable[[], Awaitable[dict]]) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def answer(send: Callable[[dict], Awaitable[None]], status: int, body: object,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


def fake_chat_app(
    *, forget_last: bool = False, delay_s: float = 0.0, first_turns: list[float] | None = None
) -> App:
    """A fake /api/chat that keeps every turn; with ``forget_last``, its history leaves out
    the last answer. ``first_turns`` gets the Trio time of each conversation's first turn."""
    histories: dict[str, list[dict[str, str]]] = {}
    session_ids = itertools.count()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        cookie = dict(scope["headers"]).get(b"cookie", b"").decode()
        session = cookie.partition("sessionId=")[2] or None
        if scope["method"] == "POST":
            prompt = json.loads(await read_body(receive))["prompt"]
            headers = [(b"server-timing", b"upstream;dur=1.0, app;dur=0.5")]
            if session is None:
                session = str(next(session_ids))
                if first_turns is not None:
                    first_turns.append(trio.current_time())
                headers.append((b"set-cookie", f"sessionId={session}; Path=/".encode()))
            await trio.sleep(delay_s)
            reply = f"echo {prompt}"
            histories.setdefault(session, []).extend(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
            )
            await answer(send, 200, {"response": reply}, headers)
        else:
            history = histories.get(session or "", [])
            await answer(send, 200, {"messages": history[:-1] if forget_last else history})

    return app


async def always_500(scope: Scope, receive: Any, send: Any) -> None:
    await answer(send, 500, {"error": {"type": "server_error", "message": "boom"}})


async def test_a_small_session_run_passes_every_check(server: RunningServer) -> None:
    report = await run_loadtest(options(server.url, conversations=5, turns=3, concurrency=3))

    assert report.passed, report.to_dict()
    assert report.requests == 15
    assert report.ok_turns == 15
    assert report.checks_passed == 5
    assert report.errors == {}
    assert report.latency_ms is not None
    assert report.latency_ms.count == 15
    assert report.overhead_ms is not None
    assert report.overhead_ms.count == 15
    assert {"upstream", "gate", "mailbox", "app"} <= set(report.server_timing_ms)


async def test_the_httpx_client_gives_the_same_verdict(server: RunningServer) -> None:
    report = await run_loadtest(
        options(server.url, conversations=4, turns=2, concurrency=2, client="httpx")
    )

    assert report.passed, report.to_dict()
    assert report.checks_passed == 4


async def test_a_server_answering_500_fails_the_run(nursery: trio.Nursery) -> None:
    url = await serve_fake(nursery, always_500)

    report = await run_loadtest(options(url, conversations=3, turns=2, concurrency=3))

    assert not report.passed
    assert report.failed_turns == 6
    assert report.errors == {"HTTP 500": 6}
    assert "boom" in report.error_samples[0]
    assert report.checks_skipped == 3  # no conversation ever got a cookie


async def test_the_command_exits_non_zero_when_turns_fail(nursery: trio.Nursery) -> None:
    url = await serve_fake(nursery, always_500)

    argv = ["loadtest", "--url", url, "--conversations", "2", "--turns", "1", "--no-progress"]
    status = await trio.to_thread.run_sync(run_command, argv)

    assert status == 1


async def test_a_history_missing_a_turn_fails_the_check(nursery: trio.Nursery) -> None:
    url = await serve_fake(nursery, fake_chat_app(forget_last=True))

    report = await run_loadtest(options(url, conversations=3, turns=2, concurrency=2))

    assert report.ok_turns == 6
    assert report.errors == {}
    assert report.checks_failed == 3
    assert not report.passed
    assert "3 messages in the history, expected 4" in report.check_failures[0]


async def test_max_duration_starts_no_conversation_after_it_runs_out(
    nursery: trio.Nursery,
) -> None:
    url = await serve_fake(nursery, fake_chat_app(delay_s=0.05))

    report = await run_loadtest(
        options(url, conversations=100, turns=1, concurrency=2, max_duration_s=0.3)
    )

    assert report.stopped_early
    assert 2 <= report.conversations_run < 100
    assert report.ok_turns == report.conversations_run
    assert report.checks_passed == report.conversations_run
    assert report.passed


async def test_a_ramp_spreads_the_first_turns_and_keeps_conversations_apart(
    nursery: trio.Nursery, mock_clock: MockClock
) -> None:
    first_turns: list[float] = []
    url = await serve_fake(nursery, fake_chat_app(first_turns=first_turns))
    started = trio.current_time()
    reports = []

    async def run() -> None:
        reports.append(await run_loadtest(
            options(url, conversations=6, turns=2, concurrency=6, ramp_s=0.3)
        ))

    async with trio.open_nursery() as running:
        running.start_soon(run)
        while not reports:  # time moves in small steps, only when everything waits
            await wait_all_tasks_blocked()
            mock_clock.jump(0.01)

    report = reports[0]
    # Conversation i of 6 starts no sooner than 0.3 * i / 6 s after the run starts.
    offsets = sorted(turn - started for turn in first_turns)
    assert len(offsets) == 6
    assert all(offset >= 0.05 * index - 1e-9 for index, offset in enumerate(offsets))
    assert offsets[-1] < 0.3  # and the ramp ends with the last one
    assert report.passed, report.to_dict()
    assert report.checks_passed == 6


async def test_a_server_that_is_down_counts_connection_errors() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused

        report = await run_loadtest(
            options(f"http://127.0.0.1:{port}", conversations=2, turns=2, concurrency=2)
        )

    assert report.errors == {"ConnectError": 4}
    assert report.failed_turns == 4
    assert not report.passed


async def test_a_small_trace_run_passes(server: RunningServer) -> None:
    report = await run_loadtest(
        options(server.url, mode="trace", conversations=3, turns=2, concurrency=3, wait_s=5)
    )

    assert report.passed, report.to_dict()
    assert report.requests == 6
    assert report.checks_passed == 6
    assert report.other_requests >= 6  # at least one result poll per job


async def test_json_flag_writes_the_report(server: RunningServer, tmp_path) -> None:
    path = tmp_path / "report.json"
    argv = ["loadtest", "--url", server.url, "--conversations", "2", "--turns", "2",
            "--concurrency", "2", "--think-ms", "1-5", "--no-progress", "--json", str(path)]

    status = await trio.to_thread.run_sync(run_command, argv)

    assert status == 0
    data = json.loads(path.read_text())
    assert data["passed"] is True
    assert data["requests"] == 4
    assert data["checks_passed"] == 2
    assert data["mode"] == "session"
    assert set(data["latency_ms"]) == {"count", "p50", "p90", "p99", "max", "mean"}
    assert data["overhead_ms"]["count"] == 4
    assert data["errors"] == {}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("upstream;dur=12.5, gate;dur=0.0", {"upstream": 12.5, "gate": 0.0}),
        ('app;desc="the app";dur=3', {"app": 3.0}),
        ("cache, upstream;dur=bad, db;dur=2", {"db": 2.0}),
    ],
)
def test_server_timing_durations_are_parsed(header: str, expected: dict[str, float]) -> None:
    assert parse_server_timing(header) == expected


def test_a_history_in_the_wrong_order_is_reported() -> None:
    prompts = ["first", "second"]
    body = json.dumps({"messages": [
        {"role": "user", "content": "second"}, {"role": "assistant", "content": "a"},
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "b"},
    ]}).encode()

    problem = history_problem(7, body, prompts)

    assert problem is not None
    assert problem.startswith("conv 7: message 0")
    good = json.dumps({"messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
        {"role": "user", "content": "second"}, {"role": "assistant", "content": "b"},
    ]}).encode()
    assert history_problem(7, good, prompts) is None
