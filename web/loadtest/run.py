"""One load test run in-process: `LoadOptions` says what to run, `run_loadtest` runs it.

At most ``concurrency`` conversations are in flight: that many worker tasks each take the next
conversation until none is left, and each worker owns one transport (`web/loadtest/http.py`).
Session mode posts each conversation's turns to ``POST /api/chat`` and then checks its
``GET /api/chat/history`` with `history_problem`; trace mode posts each turn as a job to
``POST /chat`` and collects it with ``GET /chat/{id}/response?wait=S``. What is measured and how
it is shown lives in `web/loadtest/report.py`.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .checks import SIMULATED_PREFIX, history_problem
from .display import show_progress
from .http import HttpxTransport, RawConnection, Reply, Transport, TransportFailure
from .report import LoadReport, Recorder

"""How the OpenAI simulator's answers start; only such answers are checked for the prompt."""
_PENDING = ("queued", "processing")


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
