"""``actorchat loadtest --mode stream``: many streamed conversations, timed to the first byte.

Each conversation opens its own connection and posts its turns to ``POST /api/chat`` with
``"stream": true``, reading the server-sent events as they arrive: the time to the first
body byte (the first delta) is its TTFB, every ``delta`` event is a delivered chunk, and the
deltas joined must equal the final event's ``response``. Afterwards its
``GET /api/chat/history`` must hold each prompt followed by that exact answer.

With ``probe_url`` (the simulator's ``/v1`` base) a few streams go straight to the upstream
while the run lasts, one every ``probe_every_s``: their TTFB is the upstream's own, so the
server's share can be told apart from it.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx2
import trio

from actors.upstream.connection import HTTPConnection, open_connection

from .report import MAX_SAMPLES, Percentiles

_DELTA = b'data: {"delta"'


@dataclass
class StreamOptions:
    """What to run: ``conversations`` streamed conversations of ``turns`` turns, all at once
    (or started evenly over ``ramp_s``), pausing ``think_ms`` (uniform in A..B) between
    turns."""

    url: str = "http://127.0.0.1:3000"
    conversations: int = 10
    turns: int = 1
    ramp_s: float = 0.0
    think_ms: tuple[float, float] = (0.0, 0.0)
    seed: int | None = None
    timeout_s: float = 120.0
    check: bool = True
    probe_url: str | None = None
    probe_key: str = "sk-probe"
    probe_every_s: float = 0.25
    tag: str = field(default_factory=lambda: secrets.token_hex(4))


@dataclass
class StreamReport:
    """What a streamed run measured; plain data, ready for JSON."""

    conversations: int
    turns_ok: int = 0
    chunks: int = 0  # delta events delivered
    duration_s: float = 0.0
    chunks_per_s: float = 0.0
    ttfb_ms: Percentiles | None = None
    probe_ttfb_ms: Percentiles | None = None  # straight at the upstream, during the run
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: int = 0

    @property
    def passed(self) -> bool:
        return not self.errors and not self.checks_failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Failed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class _Client:
    """One conversation's keep-alive connection (plain HTTP), with its cookie."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.netloc = parts.netloc.encode()
        self.connection: HTTPConnection | None = None
        self.cookie: bytes | None = None

    async def send(self, method: str, path: str, body: bytes | None,
                   headers: tuple[tuple[bytes, bytes], ...] = ()) -> h11.Response:
        if self.connection is None:
            self.connection = await open_connection(self.host, self.port, None, None)
        fields = [(b"Host", self.netloc), *headers]
        if self.cookie:
            fields.append((b"Cookie", self.cookie))
        if body is not None:
            fields += [(b"Content-Type", b"application/json"),
                       (b"Content-Length", b"%d" % len(body))]
        target = (self.prefix + path).encode()
        await self.connection.send_request(h11.Request(method=method, target=target,
                                                       headers=fields), body or b"", None)
        response = await self.connection.receive_response(None)
        for name, value in response.headers:
            if name == b"set-cookie":
                self.cookie = value.split(b";", 1)[0]
        return response

    async def body_parts(self) -> Any:
        assert self.connection is not None
        while data := await self.connection.receive_data(None):
            yield data
        if not self.connection.finish():
            self.close()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class _StreamRun:
    def __init__(self, options: StreamOptions) -> None:
        self.options = options
        self.report = StreamReport(options.conversations)
        self.random = random.Random(options.seed)
        self.ttfb: list[float] = []
        self.probe_ttfb: list[float] = []
        self.started = time.perf_counter()
        self.last_end = self.started  # when the last stream ended

    def error(self, kind: str, detail: str) -> None:
        self.report.errors[kind] = self.report.errors.get(kind, 0) + 1
        if len(self.report.error_samples) < MAX_SAMPLES:
            self.report.error_samples.append(f"{kind}: {detail[:200]}")

    async def conversation(self, index: int) -> None:
        client = _Client(self.options.url)
        answers: list[tuple[str, str]] = []
        try:
            with trio.fail_after(self.options.timeout_s):
                for turn in range(self.options.turns):
                    if turn and self.options.think_ms[1] > 0:
                        await trio.sleep(self.random.uniform(*self.options.think_ms) / 1000)
                    prompt = f"conv {index} turn {turn} {self.options.tag}"
                    answers.append((prompt, await self.turn(client, prompt)))
            if self.options.check:
                await self.check(client, answers)
        except _Failed as failure:
            self.error(failure.kind, failure.args[0])
        except trio.TooSlowError:
            self.error("Timeout", f"conversation {index} took over {self.options.timeout_s} s")
        except (httpx2.HTTPError, h11.ProtocolError, OSError) as error:
            self.error(type(error).__name__, str(error))
        finally:
            client.close()

    async def turn(self, client: _Client, prompt: str) -> str:
        body = json.dumps({"prompt": prompt, "stream": True}).encode()
        started = time.perf_counter()
        response = await client.send("POST", "/api/chat", body)
        buffer = b""
        first = True
        async for data in client.body_parts():
            if first:
                first = False
                self.ttfb.append((time.perf_counter() - started) * 1000)
            buffer += data
        self.last_end = time.perf_counter()
        if response.status_code != 200:
            raise _Failed(f"HTTP {response.status_code}", buffer.decode(errors="replace"))
        return self.parse(buffer)

    def parse(self, body: bytes) -> str:
        deltas: list[str] = []
        final: dict[str, Any] | None = None
        for event in body.split(b"\n\n"):
            if event.startswith(_DELTA):
                deltas.append(json.loads(event[6:])["delta"])
            elif event.startswith(b"event: error"):
                raise _Failed("stream error", event.decode(errors="replace"))
            elif event.startswith(b"data: {"):
                final = json.loads(event[6:])
        if final is None or not body.endswith(b"data: [DONE]\n\n"):
            raise _Failed("incomplete stream", body[-200:].decode(errors="replace"))
        self.report.chunks += len(deltas)
        if "".join(deltas) != final["response"]:
            raise _Failed("deltas differ", "the deltas joined differ from the final response")
        self.report.turns_ok += 1
        return str(final["response"])

    async def check(self, client: _Client, answers: list[tuple[str, str]]) -> None:
        response = await client.send("GET", "/api/chat/history", None)
        body = b"".join([data async for data in client.body_parts()])
        expected = [text for pair in answers for text in pair]
        got = ([message["content"] for message in json.loads(body)["messages"]]
               if response.status_code == 200 else None)
        if got == expected:
            self.report.checks_passed += 1
        else:
            self.report.checks_failed += 1
            self.error("history", f"expected {len(expected)} messages, got {got!r:.150}")

    async def probe(self) -> None:
        """Streams straight at the upstream, one at a time, until cancelled."""
        assert self.options.probe_url is not None
        body = json.dumps({"model": "gpt-3.5-turbo", "stream": True,
                           "messages": [{"role": "user", "content": "probe"}]}).encode()
        auth = ((b"Authorization", b"Bearer " + self.options.probe_key.encode()),)
        while True:
            client = _Client(self.options.probe_url)
            try:
                started = time.perf_counter()
                await client.send("POST", "/chat/completions", body, auth)
                async for _ in client.body_parts():
                    if started:
                        self.probe_ttfb.append((time.perf_counter() - started) * 1000)
                        started = 0.0
            finally:
                client.close()
            await trio.sleep(self.options.probe_every_s)


async def run_stream_load(options: StreamOptions) -> StreamReport:
    """Run every conversation at once (or over ``ramp_s``) and report; never raises for a
    failed turn, which is counted in ``errors``."""
    run = _StreamRun(options)
    async with trio.open_nursery() as probes:
        if options.probe_url:
            probes.start_soon(run.probe)
        async with trio.open_nursery() as nursery:
            for index in range(options.conversations):
                nursery.start_soon(run.conversation, index)
                if options.ramp_s:
                    await trio.sleep(options.ramp_s / options.conversations)
        probes.cancel_scope.cancel()
    report = run.report
    report.duration_s = round(run.last_end - run.started, 3)  # the streams, not the checks
    report.chunks_per_s = round(report.chunks / report.duration_s, 1) if report.duration_s else 0
    report.ttfb_ms = Percentiles.of(run.ttfb)
    report.probe_ttfb_ms = Percentiles.of(run.probe_ttfb)
    return report
