"""``actorchat loadtest``: many conversations against a running server, then every one checked.

Session mode: each conversation sends its turns to ``POST /api/chat`` in order, with its own
``sessionId`` cookie and a think time between turns; afterwards ``GET /api/chat/history`` of
every conversation must hold exactly its prompts, in order, each followed by an answer.
Trace mode: each conversation posts its turns as jobs to ``POST /chat``, one after another,
and collects each with ``GET /chat/{id}/response?wait=S``; a job must end ``completed``, and
a simulated answer must quote its message.

At most ``concurrency`` conversations are in flight: that many worker tasks each take the next
conversation until none is left, and each worker owns one keep-alive connection, so there is
no connection pool to contend for and a cookie is just a header. The default client is a
minimal HTTP/1.1 client on Trio streams, because the load tester shares a CPU core with the
simulator in benchmarks: on the bench machine httpx drove ~380 req/s over one pool of 64
connections (~1,100 req/s with a client per connection) where this client drives ~9,000.
``--client httpx`` uses one shared ``httpx.AsyncClient`` instead, as a cross-check.

`run_loadtest` runs a test in-process (the bench and the tests call it); `register_cli` adds
the command. What is measured and how it is shown lives in `web/loadtest_report.py`.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import math
import random
import secrets
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import trio

from .loadtest_report import LoadReport, Recorder, print_report, show_progress

SIMULATED_PREFIX = 'Simulated reply to "'
"""How the OpenAI simulator's answers start; only such answers are checked for the prompt."""
_PENDING = ("queued", "processing")
_READ_SIZE = 65536
_MAX_HEAD_BYTES = 64 * 1024


@dataclass
class LoadOptions:
    """What to run. ``think_ms`` is the (low, high) range of the pause between two turns."""

    url: str = "http://127.0.0.1:3000"
    conversations: int = 10
    turns: int = 3
    concurrency: int = 10
    think_ms: tuple[float, float] = (0.0, 0.0)
    ramp_s: float = 0.0
    """Start the conversations evenly over this many seconds instead of all at once."""
    mode: str = "session"
    wait_s: float = 30.0
    """Trace mode: the ``?wait=`` of each result poll."""
    timeout_s: float = 60.0
    """Per request; a result poll gets at least ``wait_s + 10``."""
    job_timeout_s: float = 300.0
    """Trace mode: a job not finished this long after its POST counts as failed."""
    max_duration_s: float | None = None
    """Start no conversation after this long; those started finish. None: run them all."""
    check: bool = True
    client: str = "raw"
    progress: bool = True
    seed: int | None = None
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    """Makes this run's prompts unique: ``conv 17 turn 2 <tag>``."""


class TransportFailure(Exception):
    """A request got no complete HTTP answer; ``kind`` names why (``ConnectError``...)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass(slots=True)
class Reply:
    """An HTTP answer: header names are lower case, ``Set-Cookie`` values kept apart."""

    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes


class Transport(Protocol):
    """One worker's way to the server: one request at a time."""

    async def request(self, method: str, path: str, headers: str, body: bytes | None) -> Reply:
        """Send a request (``headers`` as ``"Name: value\\r\\n"`` lines); raise TransportFailure."""
        ...

    async def aclose(self) -> None: ...


class _Closed(Exception):
    """The peer closed the connection; ``early`` if before any byte of the answer."""

    def __init__(self, early: bool) -> None:
        super().__init__("connection closed by the server")
        self.early = early


class RawConnection:
    """One keep-alive HTTP/1.1 connection on a Trio stream (TLS for https URLs).

    Connects on first use and again after the server closes. A request on a reused connection
    that the server had already closed (nothing of the answer arrived) is sent once more on a
    new one, as browsers do. On any failure or cancel the connection is closed.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._host_line = f"Host: {parts.netloc}\r\n"
        self._stream: trio.abc.Stream | None = None
        self._buffer = bytearray()

    async def request(self, method: str, path: str, headers: str, body: bytes | None) -> Reply:
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._host_line}{headers}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode("latin-1") + (body or b"")
        reused = self._stream is not None
        try:
            try:
                return await self._exchange(method, data)
            except _Closed as closed:
                if not (closed.early and reused):
                    raise
            self._drop()
            return await self._exchange(method, data)
        except BaseException as error:
            self._drop()
            if isinstance(error, _Closed):
                raise TransportFailure("ConnectionClosed", str(error)) from None
            if isinstance(error, trio.BrokenResourceError | ConnectionError):
                raise TransportFailure("ConnectionBroken", str(error.__cause__ or error)) from None
            raise

    async def _exchange(self, method: str, data: bytes) -> Reply:
        if self._stream is None:
            self._stream = await self._connect()
            self._buffer.clear()
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, ConnectionError):
            raise _Closed(early=True) from None
        return await self._read_reply(method)

    async def _connect(self) -> trio.abc.Stream:
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(self._host, self._port)
            if self._tls:
                stream = trio.SSLStream(
                    stream, ssl.create_default_context(), server_hostname=self._host
                )
                await stream.do_handshake()
        except (OSError, trio.BrokenResourceError) as error:
            raise TransportFailure("ConnectError", str(error)) from None
        return stream

    def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            if isinstance(stream, trio.SocketStream):
                stream.socket.close()  # synchronous: safe inside a cancelled scope
            else:
                trio.lowlevel.spawn_system_task(trio.aclose_forcefully, stream)

    async def _fill(self, early: bool = False) -> None:
        assert self._stream is not None
        try:
            data = await self._stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, ConnectionError):
            raise _Closed(early) from None
        if not data:
            raise _Closed(early)
        self._buffer += data

    async def _read_reply(self, method: str) -> Reply:
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > _MAX_HEAD_BYTES:
                raise TransportFailure("ProtocolError", "response head too large")
            await self._fill(early=not buffer)
        lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        try:
            status = int(rest[:3])
        except ValueError:
            raise TransportFailure("ProtocolError", f"bad status line {lines[0][:80]!r}") from None
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "set-cookie":
                cookies.append(value.strip())
            else:
                headers[name] = value.strip()
        keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if method == "HEAD" or status in (204, 304) or status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
        elif "content-length" in headers:
            body = await self._read_exactly(int(headers["content-length"]))
        else:
            body = await self._read_to_close()
            keep_alive = False
        if not keep_alive:
            self._drop()
        return Reply(status, headers, cookies, body)

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        body = bytes(self._buffer[:size])
        del self._buffer[:size]
        return body

    async def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def _read_chunked(self) -> bytes:
        chunks = []
        while size := int((await self._read_line()).split(b";")[0], 16):
            chunks.append(await self._read_exactly(size))
            await self._read_exactly(2)
        while await self._read_line():
            pass  # trailers
        return b"".join(chunks)

    async def _read_to_close(self) -> bytes:
        try:
            while True:
                await self._fill()
        except _Closed:
            pass
        body = bytes(self._buffer)
        self._buffer.clear()
        return body

    async def aclose(self) -> None:
        self._drop()


class _RejectCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False  # the shared client must not mix conversations' cookies


class HttpxTransport:
    """A worker's view of one ``httpx.AsyncClient`` shared by all workers (``--client httpx``)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @staticmethod
    def shared_client(url: str, concurrency: int) -> httpx.AsyncClient:
        """The client all workers share: ``concurrency`` connections, no cookie jar."""
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        cookies = http.cookiejar.CookieJar(policy=_RejectCookies())
        return httpx.AsyncClient(base_url=url, limits=limits, timeout=None, cookies=cookies)

    async def request(self, method: str, path: str, headers: str, body: bytes | None) -> Reply:
        header_map = dict(
            line.split(": ", 1) for line in headers.split("\r\n") if line
        )
        if body is not None:
            header_map["Content-Type"] = "application/json"
        try:
            response = await self._client.request(method, path, headers=header_map, content=body)
        except httpx.TransportError as error:
            raise TransportFailure(type(error).__name__, str(error)) from None
        return Reply(
            response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.headers.get_list("set-cookie"),
            response.content,
        )

    async def aclose(self) -> None:
        pass  # the shared client is closed by whoever opened it


@dataclass(slots=True)
class _Conversation:
    index: int
    cookies: dict[str, str] = field(default_factory=dict)
    answered: list[int] = field(default_factory=list)
    outcome_unknown: bool = False

    def cookie_header(self) -> str:
        if not self.cookies:
            return ""
        return "Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()) + "\r\n"

    def take_cookies(self, reply: Reply) -> None:
        for raw in reply.cookies:
            name, _, value = raw.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()


class _Run:
    """One run: the workers, their conversations, and what they record."""

    def __init__(self, options: LoadOptions, transports: list[Transport]) -> None:
        self.options = options
        self.transports = transports
        self.recorder = Recorder()
        self.random = random.Random(options.seed)
        self.conversations = [_Conversation(index) for index in range(options.conversations)]

    def prompt(self, conversation: int, turn: int) -> str:
        return f"conv {conversation} turn {turn} {self.options.tag}"

    async def call(
        self, transport: Transport, method: str, path: str, headers: str = "",
        body: bytes | None = None, timeout_s: float | None = None,
    ) -> Reply | None:
        """One request; a transport failure or a timeout is recorded and gives None."""
        try:
            with trio.fail_after(timeout_s or self.options.timeout_s):
                return await transport.request(method, path, headers, body)
        except TransportFailure as failure:
            self.recorder.error(failure.kind, f"{method} {path}: {failure}")
        except trio.TooSlowError:
            self.recorder.error("Timeout", f"{method} {path}: no answer in time")
        return None

    def failed_reply(self, reply: Reply, what: str) -> None:
        self.recorder.error(f"HTTP {reply.status}", f"{what}: {reply.body[:200]!r}")

    async def workers(
        self,
        work: Callable[[Transport, _Conversation], Awaitable[None]],
        conversations: list[_Conversation],
        deadline: float = math.inf,
        ramp_s: float = 0.0,
    ) -> int:
        """Run ``work(transport, conversation)`` for each conversation, on all workers.

        Conversation ``i`` of ``n`` starts no sooner than ``ramp_s * i / n`` seconds from now,
        and none starts after ``deadline`` (Trio time); those started finish.
        Returns how many started.
        """
        taken = 0
        ramp_from = trio.current_time()

        async def worker(transport: Transport) -> None:
            nonlocal taken
            while taken < len(conversations) and trio.current_time() < deadline:
                index, taken = taken, taken + 1
                if ramp_s:
                    await trio.sleep_until(ramp_from + ramp_s * index / len(conversations))
                await work(transport, conversations[index])

        async with trio.open_nursery() as nursery:
            for transport in self.transports:
                nursery.start_soon(worker, transport)
        return taken

    async def think(self, turn: int) -> None:
        low, high = self.options.think_ms
        if turn > 0 and high > 0:
            await trio.sleep(self.random.uniform(low, high) / 1000)

    async def session_conversation(self, transport: Transport, conv: _Conversation) -> None:
        recorder = self.recorder
        for turn in range(self.options.turns):
            await self.think(turn)
            body = json.dumps({"prompt": self.prompt(conv.index, turn)}).encode()
            recorder.requests += 1
            started = time.perf_counter()
            reply = await self.call(transport, "POST", "/api/chat", conv.cookie_header(), body)
            latency_ms = (time.perf_counter() - started) * 1000
            if reply is None:
                recorder.failed_turns += 1
                conv.outcome_unknown = True
                continue
            conv.take_cookies(reply)
            if reply.status == 200:
                conv.answered.append(turn)
                recorder.turn_ok(latency_ms, reply.headers.get("server-timing"))
            else:
                recorder.failed_turns += 1
                self.failed_reply(reply, "POST /api/chat")

    async def check_history(self, transport: Transport, conv: _Conversation) -> None:
        if conv.outcome_unknown or not conv.cookies:
            self.recorder.checks_skipped += 1
            return
        self.recorder.other_requests += 1
        reply = await self.call(transport, "GET", "/api/chat/history", conv.cookie_header())
        if reply is None:
            self.recorder.check(f"conv {conv.index}: history could not be read")
        elif reply.status != 200:
            self.failed_reply(reply, "GET /api/chat/history")
            self.recorder.check(f"conv {conv.index}: history answered HTTP {reply.status}")
        else:
            expected = [self.prompt(conv.index, turn) for turn in conv.answered]
            self.recorder.check(history_problem(conv.index, reply.body, expected))

    async def trace_conversation(self, transport: Transport, conv: _Conversation) -> None:
        for turn in range(self.options.turns):
            await self.think(turn)
            await self.trace_job(transport, self.prompt(conv.index, turn))

    async def trace_job(self, transport: Transport, message: str) -> None:
        recorder = self.recorder
        recorder.requests += 1
        started = time.perf_counter()
        body = json.dumps({"message": message}).encode()
        reply = await self.call(transport, "POST", "/chat", body=body)
        if reply is None or reply.status != 202:
            recorder.failed_turns += 1
            if reply is not None:
                self.failed_reply(reply, "POST /chat")
            return
        try:
            trace_id = json.loads(reply.body)["traceId"]
        except (ValueError, KeyError, TypeError):
            recorder.failed_turns += 1
            recorder.error("BadReply", f"POST /chat: no traceId in {reply.body[:200]!r}")
            return
        path = f"/chat/{trace_id}/response?wait={self.options.wait_s:g}"
        poll_timeout = max(self.options.timeout_s, self.options.wait_s + 10)
        result: dict[str, object] = {"status": "queued"}
        with trio.move_on_after(self.options.job_timeout_s):
            while result.get("status") in _PENDING:
                recorder.other_requests += 1
                reply = await self.call(transport, "GET", path, timeout_s=poll_timeout)
                if reply is None or reply.status != 200:
                    recorder.failed_turns += 1
                    if reply is not None:
                        self.failed_reply(reply, f"GET /chat/{trace_id}/response")
                    return
                try:
                    result = dict(json.loads(reply.body))
                except (ValueError, TypeError):
                    recorder.failed_turns += 1
                    recorder.error("BadReply", f"GET {path}: {reply.body[:200]!r}")
                    return
        status = result.get("status")
        if status != "completed":
            recorder.failed_turns += 1
            error = result.get("error") or {}
            kind = error.get("type", "") if isinstance(error, dict) else ""
            detail = json.dumps(result)[:300] if status not in _PENDING else "still pending"
            recorder.error(f"job {status}" + (f" ({kind})" if kind else ""), detail)
            return
        recorder.turn_ok((time.perf_counter() - started) * 1000, None)
        if self.options.check:
            response = result.get("response")
            problem = None
            if not isinstance(response, str) or not response:
                problem = f"job {trace_id}: completed without a response"
            elif response.startswith(SIMULATED_PREFIX) and f'"{message}"' not in response:
                problem = f"job {trace_id}: response {response[:120]!r} does not quote {message!r}"
            self.recorder.check(problem)


def history_problem(index: int, body: bytes, prompts: list[str]) -> str | None:
    """What is wrong with conversation ``index``'s history ``body``; None if it is right.

    Right means: exactly ``prompts`` as user messages, in order, each followed by a non-empty
    assistant answer, which quotes its prompt if it is a simulated answer.
    """
    try:
        messages = json.loads(body)["messages"]
        pairs = [(message["role"], message["content"]) for message in messages]
    except (ValueError, KeyError, TypeError):
        return f"conv {index}: history is not {{messages: [{{role, content}}...]}}"
    if len(pairs) != 2 * len(prompts):
        return f"conv {index}: {len(pairs)} messages in the history, expected {2 * len(prompts)}"
    for position, (role, content) in enumerate(pairs):
        prompt = prompts[position // 2]
        if position % 2 == 0:
            if role != "user" or content != prompt:
                return f"conv {index}: message {position} is {role} {content!r}, not {prompt!r}"
        elif role != "assistant" or not isinstance(content, str) or not content:
            return f"conv {index}: message {position} is {role} {content!r}, expected an answer"
        elif content.startswith(SIMULATED_PREFIX) and f'"{prompt}"' not in content:
            return f"conv {index}: answer {position} {content[:120]!r} does not quote {prompt!r}"
    return None


async def run_loadtest(options: LoadOptions) -> LoadReport:
    """Run the load test ``options`` describes and return its report.

    Failed requests and checks are recorded, never raised. Cancelling stops the run and closes
    its connections.
    """
    if options.mode not in ("session", "trace"):
        raise ValueError(f"mode must be 'session' or 'trace', not {options.mode!r}")
    workers = max(1, min(options.concurrency, options.conversations))
    shared = None
    if options.client == "httpx":
        shared = HttpxTransport.shared_client(options.url, workers)
        transports: list[Transport] = [HttpxTransport(shared) for _ in range(workers)]
    else:
        transports = [RawConnection(options.url) for _ in range(workers)]
    run = _Run(options, transports)
    report = LoadReport(options.mode, options.url, options.client, options.conversations,
                        options.turns, options.concurrency)
    check_s = 0.0
    planned = options.conversations * options.turns
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(show_progress, run.recorder, planned, options.progress)
            started = time.perf_counter()
            limit = options.max_duration_s
            deadline = trio.current_time() + (math.inf if limit is None else limit)
            work = run.session_conversation if options.mode == "session" else run.trace_conversation
            report.conversations_run = await run.workers(
                work, run.conversations, deadline, options.ramp_s
            )
            duration_s = time.perf_counter() - started
            if options.check and options.mode == "session":
                done = run.conversations[: report.conversations_run]
                await run.workers(run.check_history, done)
                check_s = time.perf_counter() - started - duration_s
            nursery.cancel_scope.cancel()
    finally:
        for transport in transports:
            await transport.aclose()
        if shared is not None:
            with trio.CancelScope(shield=True):
                await shared.aclose()
    return run.recorder.report(report, duration_s, check_s)


def _think_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B in milliseconds, got {text!r}") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= A <= B, got {text!r}")
    return bounds


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``loadtest`` to ``subparsers``; its ``func`` runs `run_loadtest` under ``trio.run``."""
    parser = subparsers.add_parser(
        "loadtest",
        help="drive a running server with many conversations and check them all",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add = parser.add_argument
    add("--url", default=LoadOptions.url, help="the server's base URL (%(default)s)")
    add("--conversations", type=_positive, default=10, help="conversations in all (%(default)s)")
    add("--turns", type=_positive, default=3, help="turns per conversation (%(default)s)")
    add("--concurrency", type=_positive, default=10, help="conversations in flight (%(default)s)")
    add("--think-ms", type=_think_range, default=(0.0, 0.0), metavar="A-B",
        help="pause between turns, uniform in A..B ms (default 0)")
    add("--ramp-s", type=float, default=0.0, dest="ramp_s", metavar="S",
        help="start the conversations evenly over S seconds (default: all at once)")
    add("--mode", choices=("session", "trace"), default="session", help="%(default)s")
    add("--wait", type=float, default=30.0, dest="wait_s",
        help="trace mode: ?wait= of each result poll, in seconds (%(default)s)")
    add("--timeout", type=float, default=60.0, dest="timeout_s",
        help="seconds per request (%(default)s)")
    add("--client", choices=("raw", "httpx"), default="raw",
        help="HTTP client: the built-in keep-alive client or httpx (%(default)s)")
    add("--max-duration", type=float, default=None, dest="max_duration_s", metavar="S",
        help="start no conversation after S seconds (default: run them all)")
    add("--no-check", action="store_false", dest="check", help="skip the history/result checks")
    add("--no-progress", action="store_false", dest="progress", help="no progress bar")
    add("--seed", type=int, default=None, help="seed for the think times")
    add("--json", default=None, dest="json_path", metavar="FILE", help="write the report here")
    parser.set_defaults(func=run_loadtest_command)


def run_loadtest_command(args: argparse.Namespace) -> int:
    """The ``loadtest`` command: 0 if every turn and check passed, 1 if not, 130 on Ctrl-C."""
    options = LoadOptions(
        url=args.url, conversations=args.conversations, turns=args.turns,
        concurrency=args.concurrency, think_ms=args.think_ms, ramp_s=args.ramp_s, mode=args.mode,
        wait_s=args.wait_s, timeout_s=args.timeout_s, max_duration_s=args.max_duration_s,
        check=args.check, client=args.client, progress=args.progress, seed=args.seed,
    )
    try:
        report = trio.run(run_loadtest, options)
    except KeyboardInterrupt:
        print("actorchat loadtest: interrupted", file=sys.stderr)
        return 130
    print_report(report)
    if args.json_path:
        report.write_json(args.json_path)
    return 0 if report.passed else 1
