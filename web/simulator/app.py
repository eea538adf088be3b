"""The OpenAI simulator as a raw ASGI 3 app: routing, the order of checks, and the counters.

`Simulator` uses no framework (it shares a CPU core with the load tester in benchmarks). It
answers ``POST /v1/chat/completions`` and ``GET /v1/models`` with OpenAI's wire format, status
codes, error bodies and headers, so the official ``openai`` SDK treats it as it treats the real
service. A chat completion goes through, in order: bearer auth (401), body validation (400, 413),
the rpm token bucket (429), one seeded draw for an injected fault (429, 500/503, hang, dropped
connection, error event mid-stream), then ``latency_ms`` of sleep and the answer, whole or
streamed (`streaming.py`). Counters are served at ``GET /_simulator/stats`` and logged (counts
only, never keys or message text) on logger ``actorchat.simulator`` every `SUMMARY_EVERY_S`
seconds while there is traffic. The last ``keep_received`` valid chat requests, messages
included, are served at ``GET /_simulator/received`` so tests can see what was sent upstream.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors.config import SimulatorConfig

from . import fault_answers
from .auth import auth_error
from .completions import answer, completion
from .exchange import ApiError, Exchange, Receive, Scope, Send
from .faults import Fault, FaultPicker
from .rate_limit import TokenBucket, default_burst, ratelimit_headers
from .request import ChatRequest, parse_chat_request
from .streaming import StreamEnd, send_stream

logger = logging.getLogger("actorchat.simulator")

SUMMARY_EVERY_S = 10.0
"""How often the counters are logged at INFO while requests keep arriving."""
STATS_PATH = "/_simulator/stats"
RECEIVED_PATH = "/_simulator/received"
MODELS = ("gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1")

_OUTCOMES = (
    "unauthorized",
    "bad_request",
    "rate_limited_rpm",
    "rate_limited_injected",
    "server_error",
    "hang",
    "drop",
    "stream_error",
    "client_left",
    "not_found",
)


class Simulator:
    """The OpenAI simulator as an ASGI 3 callable, built from a `SimulatorConfig`.

    Serve it with `serve_simulator` (or any Trio ASGI server: it sleeps with ``trio.sleep`` and
    reads the Trio clock, so ``MockClock`` drives its rpm bucket). With ``rpm_limit`` set, every
    chat completion that passes validation carries ``x-ratelimit-*-requests`` headers; an
    injected 429 spends no token, so its ``x-ratelimit-remaining-requests`` shows the budget
    left, while the 429 of an exhausted bucket shows 0. Fault choices come from
    ``random.Random(config.seed)``, one draw per request that reaches them, so a seeded run with
    the same request order repeats. A hanging request ends when its client disconnects, the
    server is cancelled, or after `fault_answers.HANG_CAP_S`. A streamed answer whose client
    disconnects stops at once (counted as ``client_left``).

    ``received`` holds the last ``config.keep_received`` chat requests that passed validation,
    oldest first, each as `ChatRequest.record` gives it (faulted and rate-limited ones too: they
    were received).
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.faults = FaultPicker(
            rate_429=config.rate_429,
            rate_5xx=config.rate_5xx,
            rate_hang=config.rate_hang,
            rate_drop=config.rate_drop,
            rate_stream_error=config.rate_stream_error,
            seed=config.seed,
        )
        self.rate_gate: TokenBucket | None = None
        if config.rpm_limit:
            burst = config.rpm_burst or default_burst(config.rpm_limit)
            self.rate_gate = TokenBucket(config.rpm_limit, burst)
        self._counts = dict.fromkeys(("requests", "completed", "streamed", *_OUTCOMES), 0)
        self._in_flight = 0
        self.received: deque[dict[str, Any]] = deque(maxlen=config.keep_received)
        self._next_summary_at: float | None = None
        self._routes: dict[str, tuple[str, Callable[[Exchange], Awaitable[None]]]] = {
            "/v1/chat/completions": ("POST", self._chat_completions),
            "/v1/models": ("GET", self._models),
        }

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (never the API key); the body of ``/_simulator/stats``.

        ``requests`` counts every request to ``/v1``, ``completed`` the chat completions answered
        in full (``streamed`` of them as SSE), ``in_flight`` those being answered now; each
        outcome (``unauthorized``, ``bad_request``, ``rate_limited_rpm``,
        ``rate_limited_injected``, ``server_error``, ``hang``, ``drop``, ``stream_error``,
        ``client_left``, ``not_found``) counts the requests that ended that way: ``drop``
        counts dropped streams too, ``stream_error`` the streams ended by an error event,
        ``client_left`` the streams whose client disconnected before the end. ``config`` is
        the fault setup.
        """
        config = self.config.model_dump(exclude={"api_key"})
        config["api_key_required"] = self.config.api_key is not None
        return {**self._counts, "in_flight": self._in_flight, "config": config}

    def log_summary(self, when: str = "so far") -> None:
        """Log the counters at INFO on ``actorchat.simulator``, in one line."""
        counts = " ".join(f"{name}={value}" for name, value in self._counts.items())
        logger.info("simulator %s: %s in_flight=%d", when, counts, self._in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, receive, send)
        path = scope["path"].rstrip("/") or "/"
        if path == STATS_PATH:
            await exchange.json(200, self.stats())
            return
        if path == RECEIVED_PATH:
            await exchange.json(200, {"requests": list(self.received)})
            return
        self._counts["requests"] += 1
        self._maybe_log_summary()
        route = self._routes.get(path)
        if route is None:
            self._counts["not_found"] += 1
            await exchange.error(ApiError(404, f"Invalid URL ({scope['method']} {path})"))
        elif route[0] != scope["method"]:
            self._counts["not_found"] += 1
            error = ApiError(405, f"Invalid method for URL ({scope['method']} {path})")
            await exchange.error(error, [("allow", route[0])])
        else:
            self._in_flight += 1
            try:
                await route[1](exchange)
            finally:
                self._in_flight -= 1

    def _maybe_log_summary(self) -> None:
        now = trio.current_time()
        if self._next_summary_at is None:
            self._next_summary_at = now + SUMMARY_EVERY_S
        elif now >= self._next_summary_at:
            self._next_summary_at = now + SUMMARY_EVERY_S
            self.log_summary()

    async def _authorized(self, exchange: Exchange) -> bool:
        error = auth_error(exchange.bearer_key(), self.config.api_key)
        if error is None:
            return True
        self._counts["unauthorized"] += 1
        await exchange.error(error)
        return False

    async def _models(self, exchange: Exchange) -> None:
        if not await self._authorized(exchange):
            return
        data = [
            {"id": model, "object": "model", "created": 1_686_935_002, "owned_by": "openai"}
            for model in MODELS
        ]
        await exchange.json(200, {"object": "list", "data": data})

    async def _chat_completions(self, exchange: Exchange) -> None:
        if not await self._authorized(exchange):
            return
        try:
            request = parse_chat_request(await exchange.read_body())
        except ApiError as error:
            self._counts["bad_request"] += 1
            await exchange.error(error)
            return
        if self.received.maxlen:
            self.received.append(request.record())
        fault = await self._admit(exchange, request.model)
        if fault is None:
            return
        if fault in _BEFORE_THE_FIRST_BYTE or (fault is Fault.DROP and not request.stream):
            await self._inject(fault, exchange, request)
            return
        if self.config.latency_ms > 0:
            await trio.sleep(self.config.latency_ms / 1000)
        if request.stream:
            await self._stream(exchange, request, fault)
            return
        await exchange.json(200, completion(answer(request)))
        self._counts["completed"] += 1

    async def _stream(self, exchange: Exchange, request: ChatRequest, fault: Fault) -> None:
        end = await send_stream(
            exchange,
            answer(request),
            include_usage=request.include_usage,
            chunks=self.config.stream_chunks,
            delay_s=self.config.chunk_delay_ms / 1000,
            fault=fault,
        )
        self._counts[end.value] += 1
        if end is StreamEnd.COMPLETED:
            self._counts["completed"] += 1

    async def _admit(self, exchange: Exchange, model: str) -> Fault | None:
        """Check the rpm bucket and draw the fault; None once a refusal has been sent.

        The fault is drawn only for requests the bucket lets through, so a seeded run repeats
        whatever the limit. An injected 429 is a refusal, not an accepted request, so it spends
        no token and its ``x-ratelimit-remaining-requests`` shows the budget still there.
        """
        if self.rate_gate is None:
            return self.faults.pick()
        now = trio.current_time()
        state = self.rate_gate.peek(now)
        if not state.has_token:
            exchange.headers += ratelimit_headers(state)
            self._counts["rate_limited_rpm"] += 1
            await fault_answers.send_rpm_limited(exchange, state, model)
            return None
        fault = self.faults.pick()
        if fault is not Fault.RATE_LIMITED:
            state = self.rate_gate.take(now)
        exchange.headers += ratelimit_headers(state)
        return fault

    async def _inject(self, fault: Fault, exchange: Exchange, request: ChatRequest) -> None:
        if fault is Fault.RATE_LIMITED:
            self._counts["rate_limited_injected"] += 1
            await fault_answers.send_injected_429(
                exchange, request.model, self.config.retry_after_s
            )
        elif fault in (Fault.SERVER_ERROR_500, Fault.SERVER_ERROR_503):
            self._counts["server_error"] += 1
            await fault_answers.send_server_error(exchange, fault)
        elif fault is Fault.HANG:
            self._counts["hang"] += 1
            await fault_answers.hang(exchange)
        elif fault is Fault.DROP:
            self._counts["drop"] += 1
            await fault_answers.drop(exchange, completion(answer(request)))


_BEFORE_THE_FIRST_BYTE = frozenset(
    (Fault.RATE_LIMITED, Fault.SERVER_ERROR_500, Fault.SERVER_ERROR_503, Fault.HANG)
)
"""Faults that strike before any answer has begun; drops and error events strike mid-stream
(an unstreamed answer drops halfway through its body; it has no error event to send)."""


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
